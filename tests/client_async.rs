//! The client crate's async client (feature `tokio`) against a real
//! cluster: every verb, a tail that follows new entries, and the typed
//! failure when no node answers.

mod common;

use std::time::Duration;

use rast_client::asynchronous::AsyncClient;
use rast_client::{CasOutcome, ClientError, ClientOptions};

#[test]
fn the_async_client_serves_every_verb() {
    let cluster = common::Cluster::start("async", 3, 1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut client = AsyncClient::new(&cluster.addresses, ClientOptions::default()).unwrap();
        let appended = client.append("default", &["a", "b"]).await.unwrap();
        assert_eq!(appended.count, 2);
        let entries = client
            .read("default", appended.first_index, 2)
            .await
            .unwrap();
        assert_eq!(
            entries,
            vec![
                (appended.first_index, b"a".to_vec()),
                (appended.first_index.next(), b"b".to_vec())
            ]
        );

        let mut tail = client.tail("default", appended.first_index).await.unwrap();
        let later = client.append("default", &["c"]).await.unwrap();
        let mut followed = Vec::new();
        while followed.len() < 3 {
            let entry = tokio::time::timeout(Duration::from_secs(20), tail.next())
                .await
                .expect("the tail answers")
                .expect("a live tail")
                .unwrap();
            followed.push(entry);
        }
        assert_eq!(followed[2], (later.first_index, b"c".to_vec()));
        assert_eq!(followed[0].0, appended.first_index);

        assert_eq!(client.get(b"async-k", false).await.unwrap(), None);
        client.put(b"async-k", b"v1").await.unwrap();
        assert_eq!(
            client.get(b"async-k", false).await.unwrap(),
            Some(b"v1".to_vec())
        );
        assert_eq!(
            client.cas(b"async-k", Some(b"nope"), b"v2").await.unwrap(),
            CasOutcome::Mismatch(Some(b"v1".to_vec()))
        );
        assert_eq!(
            client.cas(b"async-k", Some(b"v1"), b"v2").await.unwrap(),
            CasOutcome::Swapped
        );
        client.delete(b"async-k").await.unwrap();
        assert_eq!(client.get(b"async-k", false).await.unwrap(), None);
        let status = client.status("default").await.unwrap();
        assert!(status.last_index >= later.first_index.get(), "{status:?}");

        let options = ClientOptions {
            deadline: Duration::from_millis(500),
            timeout: Duration::from_millis(200),
            ..ClientOptions::default()
        };
        let mut nowhere = AsyncClient::new(&["127.0.0.1:1"], options).unwrap();
        let refused = nowhere.append("default", &["x"]).await.unwrap_err();
        assert!(matches!(refused, ClientError::NoLeader { .. }), "{refused}");
    });
}
