//! The built-in runner as a client sees it: streaming without gaps, resume,
//! queueing, timeouts, process groups, encodings, idempotency.

mod common;

use common::*;
use openwork_host::protocol::TaskStatus;
use serde_json::{Value, json};

/// A shell loop waiting (at most 30 s) for a file to appear in the task's cwd.
fn wait_for(file: &str) -> String {
    format!("i=0; while [ ! -e {file} ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done")
}

#[tokio::test]
async fn a_second_client_subscribing_during_a_fast_write_sees_every_byte_once() {
    let host = TestHost::started();
    let mut starter = host.connect().await;
    let (first, second) = (8 * 1024 * 1024, 32 * 1024 * 1024);
    let size = first + second + "done\n".len();
    // It writes, waits for `go`, writes fast, and cannot end before `end`:
    // the subscription below starts while it runs, most likely mid-write.
    let command = format!(
        "yes 'abcdefghijklmnopqrstuvwxyz' | head -c {first}; {}; yes 'abcdefghijklmnopqrstuvwxyz' | tail -c +{} | head -c {second}; {}; echo done",
        wait_for("go"),
        first % 27 + 1,
        wait_for("end"),
    );
    let task = run(&mut starter, json!({"command": command})).await;
    let mut late = host.connect().await;
    let first_seq = within(10, async {
        loop {
            let m = starter.next_notification().await.unwrap();
            if m["method"] == "log.chunk" {
                return m["params"]["seq"].as_u64().unwrap();
            }
        }
    })
    .await;
    assert_eq!(first_seq, 1);
    std::fs::write(host.work.join("go"), "").unwrap();
    let sub: Value = within(
        10,
        late.call("task.subscribe", json!({"taskId": task, "fromSeq": 1})),
    )
    .await
    .unwrap();
    assert_eq!(sub["fromSeq"], 1);
    assert_eq!(
        sub["status"], "running",
        "the subscription began while the task ran: {sub}"
    );
    let replayed_up_to = sub["lastSeq"].as_u64().unwrap();
    std::fs::write(host.work.join("end"), "").unwrap();
    let followed = follow(&mut late, &task, 120).await;
    assert_contiguous(&followed.chunks, 1);
    assert!(
        followed.chunks.last().unwrap().seq > replayed_up_to,
        "chunks written after the subscription came live"
    );
    let output = followed.output();
    assert_eq!(output.len(), size);
    let mut expected: Vec<u8> = b"abcdefghijklmnopqrstuvwxyz\n"
        .iter()
        .copied()
        .cycle()
        .take(first + second)
        .collect();
    expected.extend_from_slice(b"done\n");
    assert!(
        output == expected,
        "the bytes differ from what the task wrote"
    );
    assert_eq!(followed.last().status, TaskStatus::Succeeded);
}

#[tokio::test]
async fn subscribing_past_the_end_of_a_running_task_follows_it_live_only() {
    let host = TestHost::started();
    let mut starter = host.connect().await;
    let task = run(
        &mut starter,
        json!({"command": format!("echo one; echo two; {}; echo three", wait_for("go"))}),
    )
    .await;
    within(10, async {
        let mut seen = 0;
        while seen < 2 {
            let m = starter.next_notification().await.unwrap();
            if m["method"] == "log.chunk" {
                seen += m["params"]["data"].as_str().unwrap().lines().count();
            }
        }
    })
    .await;
    let record: Value = within(10, starter.call("task.get", json!({"taskId": task})))
        .await
        .unwrap();
    let last = record["lastSeq"].as_u64().unwrap();
    let mut late = host.connect().await;
    let sub: Value = within(
        10,
        late.call("task.subscribe", json!({"taskId": task, "fromSeq": 1000})),
    )
    .await
    .unwrap();
    assert_eq!(sub["status"], "running", "{sub}");
    assert_eq!(sub["lastSeq"], last);
    assert_eq!(
        sub["fromSeq"],
        last + 1,
        "past the end: live from the next chunk"
    );
    std::fs::write(host.work.join("go"), "").unwrap();
    let followed = follow(&mut late, &task, 30).await;
    assert_eq!(followed.output(), b"three\n", "nothing stored is replayed");
    assert_contiguous(&followed.chunks, last + 1);
    assert_eq!(followed.last().status, TaskStatus::Succeeded);
}

#[tokio::test]
async fn resubscribing_after_a_disconnect_resumes_without_gap_or_duplicate() {
    let host = TestHost::started();
    let mut first = host.connect().await;
    let task = run(
        &mut first,
        json!({"command": "for i in $(seq 1 200); do echo row $i; sleep 0.005; done"}),
    )
    .await;
    let mut seen = Vec::new();
    within(20, async {
        while seen.len() < 20 {
            let m = first.next_notification().await.unwrap();
            if m["method"] == "log.chunk" {
                seen.push(
                    serde_json::from_value::<openwork_host::protocol::LogChunk>(
                        m["params"].clone(),
                    )
                    .unwrap(),
                );
            }
        }
    })
    .await;
    drop(first);
    let next = seen.last().unwrap().seq + 1;
    let mut second = host.connect().await;
    let sub: Value = within(
        10,
        second.call("task.subscribe", json!({"taskId": task, "fromSeq": next})),
    )
    .await
    .unwrap();
    assert_eq!(sub["fromSeq"], next);
    let rest = follow(&mut second, &task, 60).await;
    seen.extend(rest.chunks);
    assert_contiguous(&seen, 1);
    let text: String = seen.iter().map(|c| c.data.as_str()).collect();
    let expected: String = (1..=200).map(|i| format!("row {i}\n")).collect();
    assert_eq!(text, expected);
}

#[tokio::test]
async fn tasks_over_the_concurrency_limit_wait_their_turn() {
    let mut host = TestHost::new("max_concurrent = 1\n");
    host.start();
    let mut client = host.connect().await;
    let first = run(&mut client, json!({"argv": ["sleep", "1"]})).await;
    let second = run(&mut client, json!({"argv": ["true"]})).await;
    let record: Value = within(10, client.call("task.get", json!({"taskId": second})))
        .await
        .unwrap();
    assert_eq!(
        record["status"], "queued",
        "the second task waits while the first runs"
    );
    let followed = follow(&mut client, &second, 30).await;
    assert_eq!(followed.last().status, TaskStatus::Succeeded);
    let a: Value = within(10, client.call("task.get", json!({"taskId": first})))
        .await
        .unwrap();
    let b: Value = within(10, client.call("task.get", json!({"taskId": second})))
        .await
        .unwrap();
    assert_eq!(a["status"], "succeeded");
    assert!(
        b["startedAt"].as_str().unwrap() >= a["finishedAt"].as_str().unwrap(),
        "the second started after the first finished: {a} {b}"
    );
}

#[tokio::test]
async fn a_task_over_its_timeout_is_stopped_and_failed() {
    let host = TestHost::started();
    let mut client = host.connect().await;
    // A timeout past what a clock can hold is refused, not a task left running.
    let err = within(
        10,
        client.call::<_, serde_json::Value>(
            "task.run",
            json!({"argv": ["true"], "timeoutS": u64::MAX}),
        ),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("-32602") && err.to_string().contains("31536000"),
        "{err}"
    );
    let task = run(&mut client, json!({"argv": ["sleep", "30"], "timeoutS": 1})).await;
    let followed = follow(&mut client, &task, 20).await;
    let last = followed.last();
    assert_eq!(last.status, TaskStatus::Failed);
    assert!(
        last.error
            .as_deref()
            .unwrap()
            .contains("timed out after 1 s"),
        "{last:?}"
    );
    assert_eq!(last.signal.as_deref(), Some("SIGTERM"));
}

#[tokio::test]
async fn cancel_and_task_end_leave_no_process_of_the_group_behind() {
    let host = TestHost::started();
    let mut client = host.connect().await;
    // A script (not exec'd) keeps the marker in its command line while it sleeps.
    let marker = format!("owcancel{}", std::process::id());
    let sleeper = script(&host.work, &marker, "#!/bin/sh\nsleep 300\n");
    let task = run(
        &mut client,
        json!({"command": format!("{0} & {0} & echo started; wait", sleeper.display())}),
    )
    .await;
    wait_until(10, "both background processes", || {
        pids_with(&marker).len() >= 2
    });
    let record: Value = within(20, client.call("task.cancel", json!({"taskId": task})))
        .await
        .unwrap();
    assert_eq!(record["status"], "cancelled");
    wait_until(10, "the cancelled group to be gone", || {
        pids_with(&marker).is_empty()
    });

    // A task whose main process exits leaves nothing running either.
    let marker = format!("owleft{}", std::process::id());
    let sleeper = script(&host.work, &marker, "#!/bin/sh\nsleep 300\n");
    let task = run(
        &mut client,
        json!({"command": format!("{} & sleep 0.5; echo parent done", sleeper.display())}),
    )
    .await;
    wait_until(10, "the background process to start", || {
        !pids_with(&marker).is_empty()
    });
    let followed = follow(&mut client, &task, 20).await;
    assert_eq!(followed.last().status, TaskStatus::Succeeded);
    assert_eq!(followed.stream("stdout"), "parent done\n");
    wait_until(10, "the leftover background process to be killed", || {
        pids_with(&marker).is_empty()
    });
}

#[tokio::test]
async fn output_is_cut_only_between_utf8_sequences_and_invalid_bytes_travel_exactly() {
    let host = TestHost::started();
    let mut client = host.connect().await;
    // The euro sign is written in two halves, with a pause between them.
    let task = run(
        &mut client,
        json!({"command": "printf 'price \\342\\202'; sleep 0.3; printf '\\254 ok\\n'; sleep 0.2; printf 'raw \\377\\376 end\\n'"}),
    )
    .await;
    let followed = follow(&mut client, &task, 20).await;
    let output = followed.output();
    assert_eq!(
        output,
        b"price \xe2\x82\xac ok\nraw \xff\xfe end\n".to_vec()
    );
    for chunk in &followed.chunks {
        if chunk.data_base64.is_none() {
            assert!(
                !chunk.data.contains('\u{FFFD}'),
                "a valid chunk was split mid-sequence: {chunk:?}"
            );
        }
    }
    let euro = followed
        .chunks
        .iter()
        .find(|c| c.data.contains('€'))
        .expect("the euro sign arrives whole");
    assert!(euro.data_base64.is_none());
    let raw = followed
        .chunks
        .iter()
        .find(|c| c.data.contains("raw"))
        .unwrap();
    assert!(raw.data.contains('\u{FFFD}'));
    assert!(
        raw.data_base64.is_some(),
        "invalid UTF-8 comes with the exact bytes"
    );
}

#[tokio::test]
async fn env_and_a_relative_cwd_are_applied() {
    let host = TestHost::started();
    std::fs::create_dir_all(host.work.join("sub")).unwrap();
    let mut client = host.connect().await;
    let task = run(
        &mut client,
        json!({"command": "echo $GREETING; pwd", "env": {"GREETING": "hi there"}, "cwd": "sub"}),
    )
    .await;
    let followed = follow(&mut client, &task, 20).await;
    assert_eq!(
        followed.stream("stdout"),
        format!("hi there\n{}\n", host.work.join("sub").display())
    );
    let record: Value = within(10, client.call("task.get", json!({"taskId": task})))
        .await
        .unwrap();
    assert!(
        !record.to_string().contains("hi there"),
        "env values are not stored: {record}"
    );
}

#[tokio::test]
async fn a_symlink_out_of_the_workspace_is_outside_it() {
    let host = TestHost::started();
    std::os::unix::fs::symlink("/", host.work.join("escape")).unwrap();
    let mut client = host.connect().await;
    let err = within(
        10,
        client.call::<_, Value>("task.run", json!({"command": "true", "cwd": "escape"})),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("outside the workspace roots"),
        "{err}"
    );
}

#[tokio::test]
async fn the_same_idempotency_key_returns_the_first_task() {
    let host = TestHost::started();
    let mut client = host.connect().await;
    let params = json!({"command": "echo once", "idempotencyKey": "deploy-42"});
    let first = run(&mut client, params.clone()).await;
    let followed = follow(&mut client, &first, 20).await;
    assert_eq!(followed.stream("stdout"), "once\n");
    let mut other = host.connect().await;
    let again: Value = within(10, other.call("task.run", params)).await.unwrap();
    assert_eq!(again["taskId"], first);
    assert_eq!(again["status"], "succeeded");
    let replay = follow(&mut other, &first, 20).await;
    assert_eq!(
        replay.stream("stdout"),
        "once\n",
        "the retry follows the first task's output"
    );
    let list: Value = within(10, other.call("task.list", json!({})))
        .await
        .unwrap();
    assert_eq!(
        list["tasks"].as_array().unwrap().len(),
        1,
        "nothing ran twice"
    );
    let err = within(
        10,
        other.call::<_, Value>(
            "task.run",
            json!({"command": "echo other", "idempotencyKey": "deploy-42"}),
        ),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("-32004"), "{err}");
}

#[tokio::test]
async fn task_list_pages_newest_first_and_filters_by_status() {
    let host = TestHost::started();
    let mut client = host.connect().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let id = run(&mut client, json!({"command": format!("exit {}", i % 2)})).await;
        follow(&mut client, &id, 20).await;
        ids.push(id);
    }
    let page: Value = within(10, client.call("task.list", json!({"limit": 2})))
        .await
        .unwrap();
    let got: Vec<&str> = page["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["taskId"].as_str().unwrap())
        .collect();
    assert_eq!(got, [ids[4].as_str(), ids[3].as_str()]);
    let next: Value = within(
        10,
        client.call("task.list", json!({"limit": 2, "before": ids[3]})),
    )
    .await
    .unwrap();
    let got: Vec<&str> = next["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["taskId"].as_str().unwrap())
        .collect();
    assert_eq!(got, [ids[2].as_str(), ids[1].as_str()]);
    let failed: Value = within(10, client.call("task.list", json!({"status": "failed"})))
        .await
        .unwrap();
    let got: Vec<&str> = failed["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["taskId"].as_str().unwrap())
        .collect();
    assert_eq!(got, [ids[3].as_str(), ids[1].as_str()]);
}

#[tokio::test]
async fn task_logs_pages_through_a_long_log() {
    let host = TestHost::started();
    let mut client = host.connect().await;
    let task = run(
        &mut client,
        json!({"command": "for i in $(seq 1 30); do echo $i; sleep 0.01; done"}),
    )
    .await;
    let followed = follow(&mut client, &task, 20).await;
    let total = followed.chunks.len() as u64;
    let mut next = 1;
    let mut text = String::new();
    let mut pages = 0;
    loop {
        let page: Value = within(
            10,
            client.call(
                "task.logs",
                json!({"taskId": task, "fromSeq": next, "limit": 7}),
            ),
        )
        .await
        .unwrap();
        pages += 1;
        for chunk in page["chunks"].as_array().unwrap() {
            assert_eq!(chunk["seq"], next);
            text.push_str(chunk["data"].as_str().unwrap());
            next += 1;
        }
        assert_eq!(page["nextSeq"], next);
        if page["done"] == true {
            break;
        }
        assert!(pages < 100, "paging must end");
    }
    assert_eq!(next, total + 1);
    assert_eq!(text, (1..=30).map(|i| format!("{i}\n")).collect::<String>());
}

/// Reads messages until the replies to every id in `ids` arrived; returns
/// them by id (notifications in between are dropped).
async fn replies(client: &mut Client, ids: &[u64]) -> std::collections::HashMap<u64, Value> {
    within(10, async {
        let mut found = std::collections::HashMap::new();
        while found.len() < ids.len() {
            let m = client.next_message().await.expect("a message");
            if let Some(id) = m["id"].as_u64().filter(|id| ids.contains(id)) {
                found.insert(id, m);
            }
        }
        found
    })
    .await
}

#[tokio::test]
async fn unsubscribe_then_subscribe_sent_together_leave_the_task_followed() {
    let host = TestHost::started();
    let mut client = host.connect().await;
    // Quiet until `go` appears, then a line and the end.
    let task = run(
        &mut client,
        json!({"command": format!("echo started; {}; echo after", wait_for("go"))}),
    )
    .await;
    // Running: its first line arrived.
    within(10, async {
        while client.next_notification().await.unwrap()["method"] != "log.chunk" {}
    })
    .await;
    // Rounds of `task.unsubscribe` and `task.subscribe` written back to
    // back: each round's unsubscribe says whether the previous round's
    // subscribe left the task followed.
    let mut id = 1000;
    for round in 0..40 {
        let (unsub, sub) = (id + 1, id + 2);
        id += 2;
        let unsubscribe = json!({"jsonrpc": "2.0", "id": unsub, "method": "task.unsubscribe", "params": {"taskId": task}});
        let subscribe = json!({"jsonrpc": "2.0", "id": sub, "method": "task.subscribe", "params": {"taskId": task, "fromSeq": 2}});
        client.send(&unsubscribe).await.unwrap();
        client.send(&subscribe).await.unwrap();
        let got = replies(&mut client, &[unsub, sub]).await;
        assert_eq!(
            got[&unsub]["result"]["wasSubscribed"], true,
            "round {round}: the task was not followed after the previous round's subscribe: {}",
            got[&unsub]
        );
        assert_eq!(got[&sub]["result"]["status"], "running", "{}", got[&sub]);
    }
    std::fs::write(host.work.join("go"), "").unwrap();
    let followed = follow(&mut client, &task, 30).await;
    assert_eq!(followed.last().status, TaskStatus::Succeeded);
    assert_eq!(
        followed.stream("stdout"),
        "after\n",
        "the last subscription (from seq 2) is live"
    );
}
