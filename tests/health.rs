//! The health panel and local metrics as clients read them.

mod common;

use common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn metrics_count_connections_and_task_outcomes_and_survive_a_restart() {
    let mut host = TestHost::started();
    let mut client = host.connect().await;
    // The harness's readiness probe is a connection too; wait until the host
    // has seen it end, so that this one is the only one left.
    let before: Value = within(10, async {
        loop {
            let m: Value = client.call("metrics.get", json!({})).await.unwrap();
            if m["connections"]["active"] == 1 {
                return m;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    for command in ["true", "false", "exit 2"] {
        let task = run(&mut client, json!({"command": command})).await;
        follow(&mut client, &task, 20).await;
    }
    for _ in 0..3 {
        let mut brief = host.connect().await;
        let _: Value = within(10, brief.call("$/ping", json!({}))).await.unwrap();
    }
    let after = within(10, async {
        loop {
            let m: Value = client.call("metrics.get", json!({})).await.unwrap();
            if m["connections"]["disconnects"].as_u64() >= Some(3) {
                return m;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(after["tasks"]["succeeded"], 1);
    assert_eq!(after["tasks"]["failed"], 2);
    // The harness's readiness probe may be counted on either side of `before`.
    let accepted = after["connections"]["accepted"].as_u64().unwrap();
    let disconnects = after["connections"]["disconnects"].as_u64().unwrap();
    assert!(accepted >= before["connections"]["accepted"].as_u64().unwrap() + 3);
    assert_eq!(after["connections"]["active"], 1);
    assert_eq!(
        accepted - disconnects,
        1,
        "every connection but this one has ended: {after}"
    );

    let health: Value = within(10, client.call("health.get", json!({})))
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["tasks"]["failed"], 2);
    assert_eq!(health["dataDir"], host.data.display().to_string());

    drop(client);
    host.terminate();
    host.start();
    let mut client = host.connect().await;
    let restarted: Value = within(10, client.call("metrics.get", json!({})))
        .await
        .unwrap();
    assert!(
        restarted["connections"]["accepted"].as_u64() > after["connections"]["accepted"].as_u64(),
        "connection counts are kept across restarts: {restarted}"
    );
    assert_eq!(restarted["tasks"]["failed"], 2);
}
