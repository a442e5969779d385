//! The host as a process: crashes, graceful shutdown, the stdio bridge, the
//! data dir lock, exit codes and what reaches stdout.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

use common::*;
use openwork_host::protocol::TaskStatus;
use serde_json::{Value, json};

#[tokio::test]
async fn after_kill_9_the_task_is_interrupted_its_children_are_gone_and_every_seen_chunk_is_kept() {
    let mut host = TestHost::started();
    let mut client = host.connect().await;
    let marker = format!("owcrash{}", std::process::id());
    // It writes, then goes quiet: a quiet process gets no SIGPIPE when the
    // host dies, so only the host's own guard can stop it.
    let worker = script(
        &host.work,
        &marker,
        "#!/bin/sh\ni=0\nwhile [ $i -lt 30 ]; do i=$((i+1)); echo tick $i; sleep 0.01; done\nsleep 300\n",
    );
    let task = run(
        &mut client,
        json!({"command": worker.display().to_string()}),
    )
    .await;
    let mut seen = Vec::new();
    within(20, async {
        while !seen
            .iter()
            .any(|c: &openwork_host::protocol::LogChunk| c.data.contains("tick 30"))
        {
            let m = client.next_notification().await.unwrap();
            if m["method"] == "log.chunk" {
                seen.push(serde_json::from_value(m["params"].clone()).unwrap());
            }
        }
    })
    .await;
    assert!(!pids_with(&marker).is_empty());
    host.kill9();
    wait_until(10, "the task's processes to die with the host", || {
        pids_with(&marker).is_empty()
    });

    host.start();
    let mut client = host.connect().await;
    let record: Value = within(10, client.call("task.get", json!({"taskId": task})))
        .await
        .unwrap();
    assert_eq!(record["status"], "interrupted");
    assert!(
        record["error"].as_str().unwrap().contains("host stopped"),
        "{record}"
    );
    assert!(record["lastSeq"].as_u64().unwrap() >= seen.len() as u64);
    let logs: Value = within(
        10,
        client.call("task.logs", json!({"taskId": task, "limit": 1000})),
    )
    .await
    .unwrap();
    let stored: Vec<openwork_host::protocol::LogChunk> =
        serde_json::from_value(logs["chunks"].clone()).unwrap();
    assert_eq!(
        &stored[..seen.len()],
        &seen[..],
        "every chunk a client saw survived the crash"
    );
    assert_eq!(logs["done"], true);
}

#[tokio::test]
async fn sigterm_interrupts_running_tasks_tells_their_clients_and_exits_cleanly() {
    let mut host = TestHost::started();
    let mut client = host.connect().await;
    let task = run(&mut client, json!({"command": "echo up; sleep 300"})).await;
    within(10, async {
        loop {
            let m = client.next_notification().await.unwrap();
            if m["method"] == "log.chunk" {
                return;
            }
        }
    })
    .await;
    let pid = host.pid();
    let waiter = std::thread::spawn(move || {
        signal(pid, nix::sys::signal::Signal::SIGTERM);
    });
    waiter.join().unwrap();
    let followed = follow(&mut client, &task, 30).await;
    let last = followed.last();
    assert_eq!(last.status, TaskStatus::Interrupted);
    assert!(last.error.as_deref().unwrap().contains("shut down"));
    let status = host.terminate();
    assert!(status.success(), "serve exits 0 after SIGTERM: {status:?}");
    assert!(!host.socket().exists(), "the socket is removed on shutdown");

    host.start();
    let mut client = host.connect().await;
    let record: Value = within(10, client.call("task.get", json!({"taskId": task})))
        .await
        .unwrap();
    assert_eq!(record["status"], "interrupted");
}

#[tokio::test]
async fn ctrl_c_stops_a_host_found_through_openwork_host_dir_as_gracefully_as_sigterm() {
    let mut host = TestHost::new("");
    host.start_with_env_dir();
    let mut client = host.connect().await;
    let health: Value = within(10, client.call("health.get", json!({})))
        .await
        .unwrap();
    assert_eq!(health["dataDir"], host.data.display().to_string());
    // The other commands find it through the variable too.
    let mut status = std::process::Command::new(bin());
    status
        .env("OPENWORK_HOST_DIR", &host.data)
        .args(["status", "--json"]);
    let status = output_within(status, 30);
    assert_eq!(status.status.code(), Some(0));
    let report: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(report["hostId"], health["hostId"]);

    let task = run(&mut client, json!({"command": "echo up; sleep 300"})).await;
    within(10, async {
        loop {
            let m = client.next_notification().await.unwrap();
            if m["method"] == "log.chunk" {
                return;
            }
        }
    })
    .await;
    signal(host.pid(), nix::sys::signal::Signal::SIGINT);
    let followed = follow(&mut client, &task, 30).await;
    let last = followed.last();
    assert_eq!(last.status, TaskStatus::Interrupted);
    assert!(last.error.as_deref().unwrap().contains("shut down"));
    let status = host.wait_for_exit();
    assert!(status.success(), "serve exits 0 after SIGINT: {status:?}");
    assert!(!host.socket().exists(), "the socket is removed on shutdown");
}

#[tokio::test]
async fn stdio_bridges_to_a_running_daemon_and_sees_the_same_tasks() {
    let host = TestHost::started();
    let mut client = host.connect().await;
    let task = run(&mut client, json!({"command": "echo shared"})).await;
    follow(&mut client, &task, 20).await;

    let input = format!(
        "{}\n{}\n",
        json!({"jsonrpc": "2.0", "id": 1, "method": "task.get", "params": {"taskId": task}}),
        json!({"jsonrpc": "2.0", "id": 2, "method": "task.run", "params": {"command": "echo via-bridge"}}),
    );
    let stdio = output_with_input(host.stdio(), input.as_bytes(), 30);
    assert!(stdio.status.success());
    let out = String::from_utf8(stdio.stdout).unwrap();
    let messages: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let get = messages
        .iter()
        .find(|m| m["id"] == 1)
        .expect("task.get answered");
    assert_eq!(get["result"]["status"], "succeeded");
    let run = messages
        .iter()
        .find(|m| m["id"] == 2)
        .expect("task.run answered");
    let new_task = run["result"]["taskId"].as_str().unwrap();
    assert!(
        out.contains("via-bridge"),
        "the bridge streams the task's output before closing: {out}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m["method"] == "task.updated" && m["params"]["status"] == "succeeded"),
        "{out}"
    );
    let list: Value = within(10, client.call("task.list", json!({})))
        .await
        .unwrap();
    assert!(
        list.to_string().contains(new_task),
        "the daemon ran the bridged task"
    );
}

#[test]
fn a_second_host_on_the_same_data_dir_is_refused_with_the_holder_named() {
    let host = TestHost::started();
    let out = output_within(host.serve_command(), 30);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("pid {}", host.pid())), "{err}");
    assert!(
        err.contains("--data-dir"),
        "the message says what to do: {err}"
    );
}

#[test]
fn two_stdio_hosts_on_one_data_dir_without_a_daemon_are_refused() {
    let host = TestHost::new("");
    let mut first = host
        .stdio()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first_in = first.stdin.take().unwrap();
    let first_out = first.stdout.take().unwrap();
    first_in
        .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"$/ping\"}\n")
        .unwrap();
    // The reply shows the first host is up and holds the data dir.
    read_exact_within(first_out, 37, 20);
    let second = output_within(host.stdio(), 30);
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("already using the data dir"), "{err}");
    drop(first_in);
    assert!(wait_within(&mut first, 30).success());
}

#[test]
fn exit_without_shutdown_exits_1_and_after_shutdown_exits_0_with_or_without_a_daemon() {
    let mut host = TestHost::new("");
    let cases = [
        ("{\"jsonrpc\":\"2.0\",\"method\":\"exit\"}\n", 1),
        (
            "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"shutdown\"}\n{\"jsonrpc\":\"2.0\",\"method\":\"exit\"}\n",
            0,
        ),
        (
            "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"shutdown\",\"params\":{\"now\":true}}\n{\"jsonrpc\":\"2.0\",\"method\":\"exit\"}\n",
            1,
        ),
        (
            "[{\"jsonrpc\":\"2.0\",\"id\":\"s\",\"method\":\"shutdown\"},{\"jsonrpc\":\"2.0\",\"method\":\"exit\"}]\n",
            0,
        ),
    ];
    // First a host in the stdio process, then through the bridge to a daemon.
    for mode in ["in-process", "bridged"] {
        if mode == "bridged" {
            host.start();
        }
        for (input, code) in cases {
            // Stdin stays open: the exit must come from `exit`, not from end of input.
            let out = output_with_input_held_open(host.stdio(), input.as_bytes(), 30);
            assert_eq!(out.status.code(), Some(code), "{mode}: {input}");
            if input.contains("\"now\"") {
                let reply: Value = serde_json::from_str(
                    String::from_utf8_lossy(&out.stdout).lines().next().unwrap(),
                )
                .unwrap();
                assert_eq!(
                    reply["error"]["code"], -32602,
                    "a refused shutdown: {reply}"
                );
            }
        }
    }
}

#[test]
fn bridged_stdio_exits_1_with_a_message_when_the_daemon_goes_away() {
    let mut host = TestHost::started();
    let mut stdio = host
        .stdio()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = stdio.stdin.take().unwrap();
    stdin
        .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"$/ping\"}\n")
        .unwrap();
    // The reply shows the bridge is connected.
    let (stdout, reply) = read_exact_within(stdio.stdout.take().unwrap(), 37, 20);
    assert_eq!(reply, b"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n");
    assert!(host.terminate().success());
    let status = wait_within(&mut stdio, 30);
    drop((stdin, stdout));
    let stderr = read_to_end_within(stdio.stderr.take().unwrap(), 10);
    let stderr = String::from_utf8_lossy(&stderr);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("closed the connection"), "{stderr}");
}

#[test]
fn stdio_writes_nothing_but_frames_to_stdout_even_when_logging_verbosely() {
    let host = TestHost::new("");
    let messages = [
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"clientInfo": {"name": "script"}}}),
        json!({"jsonrpc": "2.0", "id": 2, "method": "task.run", "params": {"command": "echo out; echo err >&2"}}),
        json!({"jsonrpc": "2.0", "id": 3, "method": "nope"}),
    ];
    let mut input = Vec::new();
    for message in messages {
        let body = message.to_string();
        write!(input, "Content-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    }
    let mut command = host.stdio();
    command.env("RUST_LOG", "debug");
    let child = output_with_input(command, &input, 30);
    assert!(child.status.success());
    let out = child.stdout;
    let err = String::from_utf8_lossy(&child.stderr);
    // Parse stdout strictly as LSP frames of JSON.
    let frames = lsp_frames(&out).len();
    assert!(
        frames >= 6,
        "replies and notifications all came as frames ({frames})"
    );
    assert!(err.contains("DEBUG"), "the logs went to stderr");
}

#[test]
fn the_data_dir_and_the_socket_are_owner_only() {
    let host = TestHost::started();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&host.data), 0o700);
    assert_eq!(mode(&host.socket()), 0o600);
    assert_eq!(mode(&host.data.join("host.db")), 0o600);
    assert_eq!(mode(&host.data.join("host.key")), 0o600);
}

#[test]
fn a_bad_config_file_stops_the_host_with_the_file_and_the_problem() {
    let host = TestHost::new("max_concurent = 2\n");
    let out = output_within(host.serve_command(), 30);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("config.toml") && err.contains("max_concurent"),
        "{err}"
    );
}
