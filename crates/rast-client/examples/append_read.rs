//! Appends two entries to the `default` log and reads them back.
//! `cargo run -p rast-client --example append_read -- 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003`
//! (the addresses `scripts/cluster` starts, and the default).

use rast_client::{Client, ClientOptions};

fn main() -> Result<(), rast_client::ClientError> {
    let nodes = std::env::args()
        .nth(1)
        .unwrap_or("127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003".into());
    let mut client = Client::new(
        &nodes.split(',').collect::<Vec<_>>(),
        ClientOptions::default(),
    )?;
    let appended = client.append("default", &["hello", "world"])?;
    for (index, payload) in client.read("default", appended.first_index, appended.count)? {
        println!("{index}\t{}", String::from_utf8_lossy(&payload));
    }
    Ok(())
}
