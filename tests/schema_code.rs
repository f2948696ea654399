//! The `rast-client` crate carries the code `capnpc` generates from
//! `schema/rast.capnp`, so that an application builds without the `capnp`
//! tool. This build generates it afresh (`build.rs`); the two must be the
//! same, or a schema change was not carried to the client.

#[test]
fn schema_code_is_current() {
    let generated = include_str!(concat!(env!("OUT_DIR"), "/rast_capnp.rs"));
    let checked_in = include_str!("../crates/rast-client/src/rast_capnp_generated.rs");
    assert!(
        generated == checked_in,
        "crates/rast-client/src/rast_capnp_generated.rs is stale: copy {}/rast_capnp.rs over it",
        env!("OUT_DIR")
    );
}
