//! The `rast` command line.

fn main() {
    println!("rast {}", env!("CARGO_PKG_VERSION"));
}
