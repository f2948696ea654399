//! Writes the seeds of the `peer`, `client` and `disk` targets
//! (`rast::fuzzing::seeds`) into `fuzz/corpus/<target>/seed-<n>`: the
//! valid encodings a fresh corpus starts from. Run from `fuzz/` with
//! `cargo run --release --bin seeds` (a plain program, not a fuzz target).

use rast::fuzzing::seeds;
use std::path::Path;

fn main() -> std::io::Result<()> {
    let targets: [(&str, Vec<Vec<u8>>); 3] = [
        ("peer", seeds::peer()),
        (
            "client",
            seeds::client().into_iter().map(|(_, bytes)| bytes).collect(),
        ),
        ("disk", seeds::disk()),
    ];
    for (target, inputs) in targets {
        let dir = Path::new("corpus").join(target);
        std::fs::create_dir_all(&dir)?;
        for (n, bytes) in inputs.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{n}")), bytes)?;
        }
        println!("{target}: {} seeds in {}", inputs.len(), dir.display());
    }
    Ok(())
}
