//! The OpenCode runtime against the real `opencode serve` (from the npm
//! registry, see scripts/test) and a fake model on loopback: prompts as
//! tasks, events as log chunks, permission asks, the API bridge, a crash.

mod common;
#[path = "common/fake_model.rs"]
mod fake_model;
#[path = "common/opencode_server.rs"]
mod opencode_server;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use fake_model::FakeModel;
use opencode_server::OpencodeServer;
use openwork_host::auth::Scope;
use serde_json::{Value, json};

/// One OpenCode at a time: each takes about 600 MB.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The OpenCode binary, or `None` (skipping locally; CI must have it).
fn opencode_binary() -> Option<PathBuf> {
    let found = opencode_server::installed_binary();
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "OpenCode is not installed: run scripts/test, which installs it"
        );
        eprintln!("skipping: OpenCode is not installed (scripts/test installs it)");
    }
    found
}

/// A host whose OpenCode uses the fake model, isolated in the test's own HOME.
async fn opencode_host(model: &FakeModel, binary: &std::path::Path, extra: &str) -> TestHost {
    let probe = TestHost::new("");
    let home = probe.dir.path().join("oc-home");
    drop(probe);
    let env = format!(
        "[opencode.env]\nHOME = {h:?}\nXDG_CONFIG_HOME = {c:?}\nXDG_DATA_HOME = {d:?}\nXDG_STATE_HOME = {s:?}\nXDG_CACHE_HOME = {k:?}\n\
         OPENCODE_DISABLE_MODELS_FETCH = \"1\"\nOPENCODE_DISABLE_AUTOUPDATE = \"1\"\n",
        h = home.display().to_string(),
        c = home.join("config").display().to_string(),
        d = home.join("data").display().to_string(),
        s = home.join("state").display().to_string(),
        k = home.join("cache").display().to_string(),
    );
    let mut host = TestHost::new(&format!(
        "{extra}[opencode]\nenabled = \"on\"\nbinary = {:?}\nstartup_timeout_s = 120\n{env}",
        binary.display().to_string()
    ));
    std::fs::write(host.work.join("opencode.json"), model.opencode_json()).unwrap();
    host.start();
    wait_ready(&host).await;
    host
}

async fn wait_ready(host: &TestHost) -> Value {
    let mut client = host.connect().await;
    within(150, async {
        loop {
            let health: Value = client.call("health.get", json!({})).await.unwrap();
            let opencode = health["runtimes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["name"] == "opencode")
                .unwrap()
                .clone();
            if opencode["state"] == "ready" {
                return opencode;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
}

/// Notifications about `task` until its final status.
async fn collect(
    client: &mut Client,
    task: &str,
    on_request: impl Fn(&Value) -> Option<&'static str>,
) -> (Vec<Value>, Vec<Value>) {
    let mut events = Vec::new();
    let mut statuses = Vec::new();
    within(120, async {
        loop {
            let m = client.next_notification().await.unwrap();
            if m["params"]["taskId"] != task {
                continue;
            }
            match m["method"].as_str().unwrap() {
                "log.chunk" => {
                    assert_eq!(m["params"]["stream"], "event");
                    events.push(
                        serde_json::from_str::<Value>(m["params"]["data"].as_str().unwrap())
                            .unwrap(),
                    );
                }
                "task.updated" => {
                    statuses.push(m["params"].clone());
                    let status = m["params"]["status"].as_str().unwrap();
                    if ["succeeded", "failed", "cancelled", "interrupted"].contains(&status) {
                        return;
                    }
                }
                "permission.request" => {
                    if let Some(decision) = on_request(&m["params"]) {
                        let id = m["params"]["requestId"].clone();
                        let _: Value = client
                            .call(
                                "permission.reply",
                                json!({"requestId": id, "decision": decision}),
                            )
                            .await
                            .unwrap();
                    }
                }
                _ => {}
            }
        }
    })
    .await;
    (events, statuses)
}

fn kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            format!(
                "{}{}",
                e["kind"].as_str().unwrap(),
                e["status"]
                    .as_str()
                    .map(|s| format!(":{s}"))
                    .unwrap_or_default()
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_runs_end_to_end_through_a_permission_request() {
    let Some(binary) = opencode_binary() else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let model = FakeModel::start("echo hello-from-opencode").await;
    let host = opencode_host(&model, &binary, "").await;
    let mut client = host.connect().await;
    let task = run(
        &mut client,
        json!({"runtime": "opencode", "prompt": "say hello"}),
    )
    .await;
    let requests = std::sync::Mutex::new(Vec::new());
    let (events, statuses) = collect(&mut client, &task, |request| {
        requests.lock().unwrap().push(request.clone());
        Some("once")
    })
    .await;
    let requests = requests.into_inner().unwrap();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0]["tool"], "bash");
    assert!(
        requests[0]["summary"]
            .as_str()
            .unwrap()
            .contains("echo hello-from-opencode"),
        "{}",
        requests[0]
    );
    assert!(
        requests[0]["options"]
            .as_array()
            .unwrap()
            .contains(&json!("always"))
    );
    let statuses: Vec<&str> = statuses
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["running", "waiting_permission", "running", "succeeded"]
    );
    let kinds = kinds(&events);
    assert_eq!(kinds.first().map(String::as_str), Some("session"));
    assert!(kinds.contains(&"tool:completed".to_owned()), "{kinds:?}");
    let tool = events
        .iter()
        .find(|e| e["kind"] == "tool" && e["status"] == "completed")
        .unwrap();
    assert_eq!(
        tool["output"].as_str().unwrap().trim(),
        "hello-from-opencode"
    );
    let text: String = events
        .iter()
        .filter(|e| e["kind"] == "text")
        .filter_map(|e| e["delta"].as_str().or(e["text"].as_str()))
        .collect();
    assert_eq!(text, "Done: the command ran.");
    let record: Value = within(10, client.call("task.get", json!({"taskId": task})))
        .await
        .unwrap();
    assert_eq!(record["runtime"], "opencode");
    assert_eq!(record["prompt"], "say hello");
    let session = record["sessionId"].as_str().unwrap().to_owned();
    assert!(session.starts_with("ses"), "{record}");
    let audit: Value = within(10, client.call("permission.audit", json!({"taskId": task})))
        .await
        .unwrap();
    let events: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["requested", "decided"]);

    // The same session continues with sessionId; `always` is remembered and OpenCode stops asking.
    let again = run(
        &mut client,
        json!({"runtime": "opencode", "prompt": "again", "sessionId": session}),
    )
    .await;
    let (_, statuses) = collect(&mut client, &again, |_| Some("always")).await;
    assert_eq!(statuses.last().unwrap()["status"], "succeeded");
    let third = run(
        &mut client,
        json!({"runtime": "opencode", "prompt": "once more", "sessionId": session}),
    )
    .await;
    let (_, statuses) = collect(&mut client, &third, |r| {
        panic!("asked again after always: {r}")
    })
    .await;
    let statuses: Vec<&str> = statuses
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["running", "succeeded"]);
    let rules: Value = within(10, client.call("permission.rules", json!({})))
        .await
        .unwrap();
    assert_eq!(rules["rules"][0]["runtime"], "opencode");
    assert_eq!(rules["rules"][0]["kind"], "bash");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_opencode_api_is_reachable_by_operation_id() {
    let Some(binary) = opencode_binary() else {
        return;
    };
    let _serial = SERIAL.lock().await;
    // This time the host uses a server that runs already, by URL and password.
    let model = FakeModel::start("echo api").await;
    let mut host = TestHost::new("");
    std::fs::write(host.work.join("opencode.json"), model.opencode_json()).unwrap();
    let server = OpencodeServer::start(
        &binary,
        &host.work,
        &host.dir.path().join("oc-home"),
        Duration::from_secs(120),
    )
    .await;
    std::fs::write(
        host.data.join("config.toml"),
        format!(
            "[tasks]\nworkspace_roots = [{:?}]\n[opencode]\nenabled = \"on\"\nurl = {:?}\npassword = {:?}\n",
            host.work.display().to_string(),
            server.url,
            server.password
        ),
    )
    .unwrap();
    host.start();
    wait_ready(&host).await;
    let mut client = host.connect().await;
    let init: Value = within(10, client.call("initialize", json!({})))
        .await
        .unwrap();
    let opencode = &init["capabilities"]["opencode"];
    assert_eq!(opencode["state"], "ready");
    let operations = opencode["operations"].as_array().unwrap();
    assert!(operations.len() > 100, "{}", operations.len());
    assert!(operations.contains(&json!("opencode.session.list")));
    assert!(
        !operations.contains(&json!("opencode.event.subscribe")),
        "streams are not bridged"
    );
    assert!(
        init["capabilities"]["runtimes"]
            .as_array()
            .unwrap()
            .contains(&json!("opencode"))
    );

    let created: Value = within(
        20,
        client.call(
            "opencode.session.create",
            json!({"title": "via the bridge"}),
        ),
    )
    .await
    .unwrap();
    let id = created["id"].as_str().unwrap();
    let listed: Value = within(20, client.call("opencode.session.list", json!({})))
        .await
        .unwrap();
    assert!(listed.as_array().unwrap().iter().any(|s| s["id"] == id));
    let direct = server
        .get(&format!(
            "/session?directory={}",
            host.work.display().to_string().replace('/', "%2F")
        ))
        .await
        .expect("OpenCode answers directly");
    assert_eq!(listed, direct, "the bridge returns OpenCode's own answer");
    let got: Value = within(
        20,
        client.call("opencode.session.get", json!({"sessionID": id})),
    )
    .await
    .unwrap();
    assert_eq!(got["title"], "via the bridge");
    let messages: Value = within(
        20,
        client.call("opencode.session.messages", json!({"sessionID": id})),
    )
    .await
    .unwrap();
    assert_eq!(messages, json!([]));

    let err = within(
        20,
        client.call::<_, Value>("opencode.session.get", json!({"sessionID": "ses_missing"})),
    )
    .await
    .unwrap_err();
    let openwork_host::client::ClientError::Rpc(rpc) = &err else {
        panic!("{err}")
    };
    assert!(
        [-32003, -32602].contains(&rpc.code.0),
        "OpenCode's error is mapped: {err}"
    );
    assert!(
        rpc.data.as_ref().unwrap().get("opencode").is_some(),
        "OpenCode's answer is kept: {err}"
    );
    let err = within(
        20,
        client.call::<_, Value>("opencode.session.get", json!({})),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("sessionID"), "{err}");
    let err = within(
        20,
        client.call::<_, Value>("opencode.no.such.thing", json!({})),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("-32601"), "{err}");
    let err = within(
        20,
        client.call::<_, Value>(
            "opencode.file.read",
            json!({"path": "x", "directory": "/etc"}),
        ),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("outside the workspace"), "{err}");

    let reader = host
        .pair_device("reader", Some(vec![Scope::TasksRead]))
        .await;
    let mut device = device_session(&reader).await;
    let err = within(
        20,
        device.call::<_, Value>("opencode.session.list", json!({})),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("-32002") && err.to_string().contains("opencode"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_policy_answers_before_anyone_is_asked() {
    let Some(binary) = opencode_binary() else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let model = FakeModel::start("rm -rf /").await;
    let host = opencode_host(&model, &binary, "").await;
    let mut client = host.connect().await;
    let task = run(
        &mut client,
        json!({"runtime": "opencode", "prompt": "clean up"}),
    )
    .await;
    let (events, statuses) = collect(&mut client, &task, |r| {
        panic!("a denied command reached a person: {r}")
    })
    .await;
    let denial = events
        .iter()
        .find(|e| e["kind"] == "permission")
        .expect("the host answered");
    assert_eq!(denial["reply"], "reject");
    assert!(
        denial["reason"]
            .as_str()
            .unwrap()
            .contains("deletes every file"),
        "{denial}"
    );
    assert_eq!(
        statuses.last().unwrap()["status"],
        "succeeded",
        "the agent's turn still ends"
    );
    let audit: Value = within(10, client.call("permission.audit", json!({"taskId": task})))
        .await
        .unwrap();
    assert_eq!(audit["entries"][0]["event"], "denied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opencode_killed_mid_task_fails_the_task_and_is_restarted() {
    let Some(binary) = opencode_binary() else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let model = FakeModel::start("sleep 30").await;
    let host = opencode_host(&model, &binary, "").await;
    let mut client = host.connect().await;
    let task = run(
        &mut client,
        json!({"runtime": "opencode", "prompt": "wait"}),
    )
    .await;
    let request = within(60, async {
        loop {
            let m = client.next_notification().await.unwrap();
            if m["method"] == "permission.request" {
                return m["params"].clone();
            }
        }
    })
    .await;
    let _: Value = within(
        10,
        client.call(
            "permission.reply",
            json!({"requestId": request["requestId"], "decision": "once"}),
        ),
    )
    .await
    .unwrap();
    // OpenCode marks the tool running before it asks; once answered, the
    // command itself runs, silently: wait for its process.
    wait_until(30, "the tool's `sleep 30`", || {
        !pids_with("sleep 30").is_empty()
    });
    let servers = pids_with("serve --hostname 127.0.0.1");
    assert!(!servers.is_empty(), "OpenCode runs");
    for pid in servers {
        signal(pid as u32, nix::sys::signal::Signal::SIGKILL);
    }
    let followed = follow(&mut client, &task, 60).await;
    let last = followed.last();
    assert_eq!(last.status, openwork_host::protocol::TaskStatus::Failed);
    // The dead server's tools go with it: its process group is stopped.
    wait_until(10, "the orphaned tool to be stopped", || {
        pids_with("sleep 30").is_empty()
    });
    assert!(
        last.error.as_deref().unwrap().contains("OpenCode stopped"),
        "{last:?}"
    );
    let health: Value = within(10, client.call("health.get", json!({})))
        .await
        .unwrap();
    let state = health["runtimes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "opencode")
        .unwrap()["state"]
        .clone();
    assert!(
        state == "restarting" || state == "starting" || state == "ready",
        "{state}"
    );
    wait_ready(&host).await;
    model.set_command("echo back");
    let again = run(
        &mut client,
        json!({"runtime": "opencode", "prompt": "after the crash"}),
    )
    .await;
    let (_, statuses) = collect(&mut client, &again, |_| Some("once")).await;
    assert_eq!(statuses.last().unwrap()["status"], "succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_aborts_the_opencode_session() {
    let Some(binary) = opencode_binary() else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let model = FakeModel::start("sleep 30").await;
    let host = opencode_host(&model, &binary, "").await;
    let mut client = host.connect().await;
    let task = run(
        &mut client,
        json!({"runtime": "opencode", "prompt": "wait"}),
    )
    .await;
    within(60, async {
        loop {
            let m = client.next_notification().await.unwrap();
            if m["method"] == "permission.request" {
                return;
            }
        }
    })
    .await;
    let record: Value = within(30, client.call("task.cancel", json!({"taskId": task})))
        .await
        .unwrap();
    assert_eq!(record["status"], "cancelled");
    let session = record["sessionId"].as_str().unwrap();
    let pending: Value = within(20, client.call("opencode.permission.list", json!({})))
        .await
        .unwrap();
    assert!(
        !pending.to_string().contains(session),
        "the ask was cleared in OpenCode: {pending}"
    );
    let status: Value = within(20, client.call("opencode.session.status", json!({})))
        .await
        .unwrap();
    assert_ne!(status[session]["type"], "busy", "{status}");
}

#[tokio::test]
async fn opencode_not_installed_is_runtime_unavailable_with_an_action() {
    let mut host =
        TestHost::new("[opencode]\nenabled = \"on\"\nbinary = \"/nonexistent/opencode\"\n");
    host.start();
    let mut client = host.connect().await;
    let err = within(
        10,
        client.call::<_, Value>("task.run", json!({"runtime": "opencode", "prompt": "hi"})),
    )
    .await
    .unwrap_err();
    let openwork_host::client::ClientError::Rpc(rpc) = &err else {
        panic!("{err}")
    };
    assert_eq!(rpc.code.0, -32006);
    assert!(rpc.action().unwrap().contains("npm install"), "{err}");
    let err = within(
        10,
        client.call::<_, Value>("opencode.session.list", json!({})),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("-32006"), "{err}");
    let health: Value = within(10, client.call("health.get", json!({})))
        .await
        .unwrap();
    let opencode = health["runtimes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "opencode")
        .unwrap()
        .clone();
    assert_eq!(opencode["state"], "not_installed");
    assert!(
        opencode["message"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/opencode")
    );
    let init: Value = within(10, client.call("initialize", json!({})))
        .await
        .unwrap();
    assert_eq!(init["capabilities"]["runtimes"], json!(["builtin"]));
}
