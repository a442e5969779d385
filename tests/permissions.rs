//! Permissions as clients see them: requests, the first answer winning,
//! expiry, scopes, deny rules, remembered rules, reconnects, restarts, audit.

mod common;

use common::*;
use openwork_host::auth::Scope;
use serde_json::{Value, json};

/// Reads notifications until one with `method` about `task` arrives; returns its params.
async fn next_about<C>(conn: &mut C, method: &str, task: &str) -> Value
where
    C: NextNotification,
{
    within(20, async {
        loop {
            let m = conn.next_note().await;
            if m["method"] == method && m["params"]["taskId"] == task {
                return m["params"].clone();
            }
        }
    })
    .await
}

/// Notifications about `task` until its final status (methods and statuses, in order).
async fn trail<C: NextNotification>(conn: &mut C, task: &str) -> Vec<String> {
    within(30, async {
        let mut seen = Vec::new();
        loop {
            let m = conn.next_note().await;
            if m["params"]["taskId"] != task {
                continue;
            }
            let method = m["method"].as_str().unwrap_or("").to_owned();
            if method == "task.updated" {
                let status = m["params"]["status"].as_str().unwrap_or("").to_owned();
                let done = matches!(
                    status.as_str(),
                    "succeeded" | "failed" | "cancelled" | "interrupted"
                );
                seen.push(status);
                if done {
                    return seen;
                }
            } else if method != "log.chunk" {
                seen.push(method);
            }
        }
    })
    .await
}

trait NextNotification {
    async fn next_note(&mut self) -> Value;
}

impl<R, W> NextNotification for openwork_host::client::Connection<R, W>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    async fn next_note(&mut self) -> Value {
        self.next_notification().await.expect("notification")
    }
}

fn rpc_code(err: &openwork_host::client::ClientError) -> i32 {
    match err {
        openwork_host::client::ClientError::Rpc(e) => e.code.0,
        other => panic!("not an RPC error: {other}"),
    }
}

fn events(entries: &[Value]) -> Vec<&str> {
    entries
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn two_devices_race_to_answer_and_exactly_one_decides() {
    let host = TestHost::started();
    std::fs::create_dir_all(host.work.join("junk/deep")).unwrap();
    let alice = host.pair_device("alice", None).await;
    let bob = host.pair_device("bob", None).await;
    let mut a = device_session(&alice).await;
    let mut b = device_session(&bob).await;
    let started: Value = within(
        10,
        a.call(
            "task.run",
            json!({"command": "rm -rf junk && echo removed"}),
        ),
    )
    .await
    .unwrap();
    let task = started["taskId"].as_str().unwrap().to_owned();
    let _: Value = within(10, b.call("task.subscribe", json!({"taskId": task})))
        .await
        .unwrap();
    let request = next_about(&mut a, "permission.request", &task).await;
    let seen_by_bob = next_about(&mut b, "permission.request", &task).await;
    assert_eq!(request, seen_by_bob, "both followers get the same request");
    assert_eq!(request["tool"], "command");
    assert!(
        request["summary"]
            .as_str()
            .unwrap()
            .contains("deletes files and folders recursively")
    );
    assert!(request["detail"].as_str().unwrap().contains("rm -rf junk"));
    assert_eq!(request["options"], json!(["once", "always", "reject"]));
    let id = request["requestId"].clone();
    let (from_alice, from_bob) =
        tokio::join!(reply(&mut a, &id, "once"), reply(&mut b, &id, "reject"),);
    let (winner, loser, loser_err, winner_name, decision) = match (from_alice, from_bob) {
        (Ok(_), Err(e)) => (&mut a, &mut b, e, "alice", "once"),
        (Err(e), Ok(_)) => (&mut b, &mut a, e, "bob", "reject"),
        other => panic!("exactly one answer must count: {other:?}"),
    };
    assert_eq!(rpc_code(&loser_err), -32004);
    assert!(
        loser_err.to_string().contains("already answered"),
        "{loser_err}"
    );
    let resolved = next_about(loser, "permission.resolved", &task).await;
    assert_eq!(resolved["decision"], decision);
    assert_eq!(resolved["by"], winner_name);
    let winner_trail = trail(winner, &task).await;
    assert!(
        !winner_trail.contains(&"permission.resolved".to_owned()),
        "the one who answered is not told again: {winner_trail:?}"
    );
    let end = winner_trail.last().unwrap().clone();
    if decision == "once" {
        assert_eq!(end, "succeeded");
        assert!(!host.work.join("junk").exists());
    } else {
        assert_eq!(end, "cancelled");
        assert!(
            host.work.join("junk").exists(),
            "a rejected command never ran"
        );
    }
    let mut local = host.connect().await;
    let entries = audit(&mut local, &task).await;
    assert_eq!(events(&entries), ["requested", "decided"]);
    assert_eq!(
        entries[0]["rule"], "delete-recursive",
        "the rule that made it ask is kept"
    );
    for entry in &entries {
        assert_eq!(
            entry["taskStartedBy"],
            format!("device:{}", alice.device_id),
            "who started the task is kept: {entry}"
        );
    }
    assert_eq!(entries[1]["decision"], decision);
    let actor = if winner_name == "alice" {
        &alice.device_id
    } else {
        &bob.device_id
    };
    assert_eq!(entries[1]["actor"], format!("device:{actor}"));
}

#[tokio::test]
async fn an_unanswered_request_expires_as_a_rejection() {
    let mut host = TestHost::new("[permissions]\nrequest_timeout_s = 1\n");
    host.start();
    std::fs::write(host.work.join("key"), "secret").unwrap();
    let mut client = host.connect().await;
    let task = run(&mut client, json!({"command": "chmod 600 key"})).await;
    let request = next_about(&mut client, "permission.request", &task).await;
    let resolved = next_about(&mut client, "permission.resolved", &task).await;
    assert_eq!(resolved["decision"], "reject");
    assert!(
        resolved["by"]
            .as_str()
            .unwrap()
            .contains("no answer within 1 s"),
        "{resolved}"
    );
    let followed = follow(&mut client, &task, 20).await;
    assert_eq!(
        followed.last().status,
        openwork_host::protocol::TaskStatus::Cancelled
    );
    assert!(
        followed
            .last()
            .error
            .as_deref()
            .unwrap()
            .contains("no one answered")
    );
    let err = reply(&mut client, &request["requestId"], "once")
        .await
        .unwrap_err();
    assert_eq!(rpc_code(&err), -32004, "too late: {err}");
    assert_eq!(
        events(&audit(&mut client, &task).await),
        ["requested", "expired"]
    );
}

#[tokio::test]
async fn a_device_without_the_reply_scope_is_not_asked_and_may_not_answer() {
    let host = TestHost::started();
    std::fs::write(host.work.join("f"), "x").unwrap();
    let runner = host
        .pair_device("runner", Some(vec![Scope::TasksRun, Scope::TasksRead]))
        .await;
    let mut device = device_session(&runner).await;
    let started: Value = within(
        10,
        device.call("task.run", json!({"command": "chmod 640 f"})),
    )
    .await
    .unwrap();
    let task = started["taskId"].as_str().unwrap().to_owned();
    let mut owner = host.connect().await;
    let _: Value = within(10, owner.call("task.subscribe", json!({"taskId": task})))
        .await
        .unwrap();
    let request = next_about(&mut owner, "permission.request", &task).await;
    let err = reply(&mut device, &request["requestId"], "once")
        .await
        .unwrap_err();
    assert_eq!(rpc_code(&err), -32002, "{err}");
    reply(&mut owner, &request["requestId"], "once")
        .await
        .unwrap();
    let seen = trail(&mut device, &task).await;
    assert_eq!(
        seen,
        ["waiting_permission", "queued", "running", "succeeded"],
        "no permission.* notifications without the scope"
    );
}

#[tokio::test]
async fn replies_to_unknown_requests_are_conflicts() {
    let host = TestHost::started();
    let mut client = host.connect().await;
    let err = reply(&mut client, "pq_nope", "once").await.unwrap_err();
    assert_eq!(rpc_code(&err), -32004);
    let err = reply(&mut client, "x", "maybe").await.unwrap_err();
    assert_eq!(rpc_code(&err), -32602);
}

#[tokio::test]
async fn deny_rules_fail_the_task_with_their_reason_and_never_ask() {
    let mut host = TestHost::new(
        "[[permissions.rules]]\naction = \"deny\"\nid = \"no-docker\"\nprogram = \"docker\"\nexplain = \"containers are not allowed on this host\"\n",
    );
    host.start();
    let mut client = host.connect().await;
    for (command, reason) in [
        ("rm -rf /", "deletes every file"),
        (
            "echo start && docker run alpine",
            "containers are not allowed on this host",
        ),
    ] {
        let task = run(&mut client, json!({"command": command})).await;
        let seen = trail(&mut client, &task).await;
        assert_eq!(seen, ["failed"], "{command}: no request, not even waiting");
        let record: Value = within(10, client.call("task.get", json!({"taskId": task})))
            .await
            .unwrap();
        let error = record["error"].as_str().unwrap();
        assert!(
            error.contains("denied by this host's policy") && error.contains(reason),
            "{error}"
        );
        let entries = audit(&mut client, &task).await;
        assert_eq!(events(&entries), ["denied"]);
    }
}

#[tokio::test]
async fn always_skips_the_next_prompt_and_forget_brings_it_back() {
    let host = TestHost::started();
    std::fs::write(host.work.join("f"), "x").unwrap();
    let mut client = host.connect().await;
    let first = run(&mut client, json!({"command": "chmod 600 f"})).await;
    let request = next_about(&mut client, "permission.request", &first).await;
    let always = request["always"].as_str().unwrap();
    assert!(
        always.contains("chmod") && always.contains(&host.work.display().to_string()),
        "{always}"
    );
    let reply: Value = reply(&mut client, &request["requestId"], "always")
        .await
        .unwrap();
    let rule_id = reply["ruleIds"][0].as_str().unwrap().to_owned();
    assert_eq!(
        trail(&mut client, &first).await.last().unwrap(),
        "succeeded"
    );
    let entries = audit(&mut client, &first).await;
    assert_eq!(events(&entries), ["requested", "decided"]);
    assert_eq!(entries[0]["rule"], "permissions");
    assert_eq!(entries[1]["decision"], "always");
    assert_eq!(
        entries[1]["rule"], rule_id,
        "the rule an always answer created is kept"
    );
    assert_eq!(entries[1]["taskStartedBy"], "local");

    let second = run(&mut client, json!({"command": "chmod 644 f"})).await;
    assert_eq!(
        trail(&mut client, &second).await,
        ["running", "succeeded"],
        "remembered: no prompt"
    );
    let entries = audit(&mut client, &second).await;
    assert_eq!(events(&entries), ["allowed by rule"]);
    assert_eq!(entries[0]["rule"], rule_id);

    let rules: Value = within(10, client.call("permission.rules", json!({})))
        .await
        .unwrap();
    let rule = &rules["rules"][0];
    assert_eq!(rule["ruleId"], rule_id);
    assert_eq!(rule["program"], "chmod");
    assert_eq!(rule["directory"], host.work.display().to_string());
    assert_eq!(rule["createdBy"], "the host's owner");
    let _: Value = within(
        10,
        client.call("permission.forget", json!({"ruleId": rule_id})),
    )
    .await
    .unwrap();
    let third = run(&mut client, json!({"command": "chmod 600 f"})).await;
    let again = next_about(&mut client, "permission.request", &third).await;
    assert!(again["summary"].as_str().unwrap().contains("chmod"));
    let err = within(
        10,
        client.call::<_, Value>("permission.forget", json!({"ruleId": rule_id})),
    )
    .await
    .unwrap_err();
    assert_eq!(rpc_code(&err), -32003);
}

#[tokio::test]
async fn a_device_that_reconnects_gets_the_pending_request() {
    let host = TestHost::started();
    std::fs::write(host.work.join("f"), "x").unwrap();
    let phone = host.pair_device("phone", None).await;
    let mut first = device_session(&phone).await;
    let started: Value = within(
        10,
        first.call("task.run", json!({"command": "chmod 600 f && echo done"})),
    )
    .await
    .unwrap();
    let task = started["taskId"].as_str().unwrap().to_owned();
    let request = next_about(&mut first, "permission.request", &task).await;
    drop(first);
    let mut second = device_session(&phone).await;
    let sub: Value = within(10, second.call("task.subscribe", json!({"taskId": task})))
        .await
        .unwrap();
    assert_eq!(sub["status"], "waiting_permission");
    let again = next_about(&mut second, "permission.request", &task).await;
    assert_eq!(again, request);
    reply(&mut second, &request["requestId"], "once")
        .await
        .unwrap();
    let followed = follow(&mut second, &task, 20).await;
    assert_eq!(followed.stream("stdout"), "done\n");
}

#[tokio::test]
async fn a_host_restart_while_waiting_interrupts_the_task_and_expires_the_request() {
    let mut host = TestHost::started();
    std::fs::write(host.work.join("f"), "x").unwrap();
    let mut client = host.connect().await;
    let task = run(&mut client, json!({"command": "chmod 600 f"})).await;
    next_about(&mut client, "permission.request", &task).await;
    drop(client);
    host.kill9();
    host.start();
    let mut client = host.connect().await;
    let record: Value = within(10, client.call("task.get", json!({"taskId": task})))
        .await
        .unwrap();
    assert_eq!(record["status"], "interrupted");
    let entries = audit(&mut client, &task).await;
    assert_eq!(events(&entries), ["requested", "expired"]);
    assert!(
        entries[1]["summary"]
            .as_str()
            .unwrap()
            .contains("host stopped")
    );
}

#[tokio::test]
async fn writing_outside_the_workspace_asks() {
    let host = TestHost::started();
    let mut client = host.connect().await;
    let task = run(
        &mut client,
        json!({"command": "echo hi > /var/lib/openwork-host-test-nowhere/x"}),
    )
    .await;
    let request = next_about(&mut client, "permission.request", &task).await;
    assert!(
        request["summary"]
            .as_str()
            .unwrap()
            .contains("writes outside the workspace"),
        "{request}"
    );
    reply(&mut client, &request["requestId"], "reject")
        .await
        .unwrap();
    let followed = follow(&mut client, &task, 20).await;
    assert_eq!(
        followed.last().status,
        openwork_host::protocol::TaskStatus::Cancelled
    );
    assert!(
        followed
            .last()
            .error
            .as_deref()
            .unwrap()
            .contains("the host's owner rejected")
    );
}

#[tokio::test]
async fn cancelling_a_task_that_waits_for_permission_withdraws_the_request() {
    let host = TestHost::started();
    std::fs::write(host.work.join("f"), "x").unwrap();
    let mut client = host.connect().await;
    let task = run(&mut client, json!({"command": "chmod 600 f"})).await;
    next_about(&mut client, "permission.request", &task).await;
    let record: Value = within(10, client.call("task.cancel", json!({"taskId": task})))
        .await
        .unwrap();
    assert_eq!(record["status"], "cancelled");
    assert_eq!(
        events(&audit(&mut client, &task).await),
        ["requested", "withdrawn"]
    );
}

#[tokio::test]
async fn the_client_cli_rejects_with_deny_sensitive_and_asks_on_a_terminal() {
    let host = TestHost::started();
    std::fs::write(host.work.join("f"), "x").unwrap();
    let phone = host.pair_device("cli", None).await;
    let dir = tempfile::tempdir().unwrap();
    let mut hosts = openwork_host::client::KnownHosts::load(dir.path()).unwrap();
    hosts.add(phone);
    hosts.save().unwrap();

    let out = output_within(
        std::process::Command::new(bin())
            .args(["client", "--client-dir"])
            .arg(dir.path())
            .args(["run", "--deny-sensitive", "--", "chmod", "600", "f"]),
        30,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("changes who may read, change or run files") && stderr.contains("Rejected"),
        "{stderr}"
    );

    // On a terminal (a pty from `script`), the prompt takes the answer typed.
    use std::io::Write;
    let command = format!(
        "{} client --client-dir {} run -- sh -c 'chmod 600 f && stat -c %a f'",
        bin(),
        dir.path().display()
    );
    let mut pty = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = pty.stdin.take().unwrap();
    let stdout = pty.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut stdout = stdout;
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&seen).into_owned()
    });
    // Answer once the task waits (the prompt is up by then).
    let mut owner = host.connect().await;
    within(20, async {
        loop {
            let list: Value = owner
                .call("task.list", json!({"status": "waiting_permission"}))
                .await
                .unwrap();
            if !list["tasks"].as_array().unwrap().is_empty() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stdin.write_all(b"o\n").unwrap();
    let status = wait_within(&mut pty, 30);
    drop(stdin);
    let seen = reader.join().unwrap();
    assert!(seen.contains("Allow it?"), "{seen}");
    assert!(
        seen.contains("600"),
        "the command ran after the answer: {seen}"
    );
    assert!(status.success(), "{seen}");
}

#[tokio::test]
async fn a_device_connecting_while_a_task_waits_lists_the_pending_request() {
    let host = TestHost::started();
    std::fs::write(host.work.join("f"), "x").unwrap();
    let mut owner = host.connect().await;
    let started: Value = within(
        10,
        owner.call("task.run", json!({"command": "chmod 600 f && echo done"})),
    )
    .await
    .unwrap();
    let task = started["taskId"].as_str().unwrap().to_owned();
    let request = next_about(&mut owner, "permission.request", &task).await;
    // A phone that connects now follows no task: it asks what is pending.
    let phone = host.pair_device("phone", None).await;
    let mut device = device_session(&phone).await;
    let pending: Value = within(10, device.call("permission.pending", json!({})))
        .await
        .unwrap();
    assert_eq!(pending["requests"], json!([request]));
    reply(&mut device, &request["requestId"], "once")
        .await
        .unwrap();
    let followed = follow(&mut owner, &task, 20).await;
    assert_eq!(followed.stream("stdout"), "done\n");
    let pending: Value = within(10, device.call("permission.pending", json!({})))
        .await
        .unwrap();
    assert_eq!(
        pending["requests"],
        json!([]),
        "answered: no longer pending"
    );
    // Without the scope, none is listed.
    let reader = host
        .pair_device("reader", Some(vec![Scope::TasksRead]))
        .await;
    let mut reader = device_session(&reader).await;
    let err = within(10, reader.call::<_, Value>("permission.pending", json!({})))
        .await
        .unwrap_err();
    assert_eq!(rpc_code(&err), -32002, "{err}");
}
