//! Compiles `schema/rast.capnp` with `capnpc` into `OUT_DIR`. The server
//! uses the generated code the `rast-client` crate carries; this fresh copy
//! is what `tests/schema_code.rs` holds it to, so a schema change that was
//! not carried to the client fails the tests. Needs the `capnp` tool on
//! PATH (`scripts/setup` installs Debian's `capnproto` when it is missing).

fn main() {
    println!("cargo::rerun-if-changed=schema/rast.capnp");
    if let Err(error) = capnpc::CompilerCommand::new()
        .src_prefix("schema")
        .file("schema/rast.capnp")
        .run()
    {
        panic!(
            "compiling schema/rast.capnp failed: {error}\n\
             hint: the `capnp` tool is needed; run scripts/setup (installs Debian's capnproto)"
        );
    }
}
