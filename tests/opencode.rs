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

/// A host whose OpenCode uses the fake model (`opencode_json` is the
/// project's opencode.json), isolated in a HOME inside the host's own
/// temporary dir.
async fn opencode_host(opencode_json: &str, binary: &std::path::Path, extra: &str) -> TestHost {
    let mut host = TestHost::new(&format!(
        "{extra}[opencode]\nenabled = \"on\"\nbinary = {:?}\nstartup_timeout_s = 120\n",
        binary.display().to_string()
    ));
    let home = host.dir.path().join("oc-home");
    let env: String = opencode_server::isolated_env(&home)
        .iter()
        .map(|(k, v)| format!("{k} = {v:?}\n"))
        .collect();
    let config = host.data.join("config.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!("\n[opencode.env]\n{env}"));
    std::fs::write(&config, text).unwrap();
    std::fs::write(host.work.join("opencode.json"), opencode_json).unwrap();
    host.start();
    wait_ready(&host).await;
    host
}

/// The opencode runtime's entry in the health panel.
async fn opencode_health(client: &mut Client) -> Value {
    let health: Value = within(10, client.call("health.get", json!({})))
        .await
        .unwrap();
    health["runtimes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "opencode")
        .unwrap()
        .clone()
}

async fn wait_ready(host: &TestHost) -> Value {
    let mut client = host.connect().await;
    within(150, async {
        loop {
            let opencode = opencode_health(&mut client).await;
            if opencode["state"] == "ready" {
                return opencode;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
}

/// What a connection received about one task until its final status.
#[derive(Default)]
struct Seen {
    /// The `event` log chunks, decoded.
    events: Vec<Value>,
    /// `task.updated` params.
    statuses: Vec<Value>,
    /// `permission.request` params.
    requests: Vec<Value>,
    /// `permission.resolved` params.
    resolved: Vec<Value>,
}

impl Seen {
    fn statuses(&self) -> Vec<&str> {
        self.statuses
            .iter()
            .map(|s| s["status"].as_str().unwrap())
            .collect()
    }

    fn last_status(&self) -> &Value {
        self.statuses.last().expect("a final status")
    }

    /// The answers the host gave OpenCode itself (`kind: permission`).
    fn answers(&self) -> Vec<&Value> {
        self.events
            .iter()
            .filter(|e| e["kind"] == "permission")
            .collect()
    }

    fn text(&self) -> String {
        self.events
            .iter()
            .filter(|e| e["kind"] == "text" && e.get("sessionId").is_none())
            .filter_map(|e| e["delta"].as_str().or(e["text"].as_str()))
            .collect()
    }
}

/// Notifications about `task` until its final status; `on_request` answers
/// each permission request (or leaves it, with `None`).
async fn collect(
    client: &mut Client,
    task: &str,
    on_request: impl Fn(&Value) -> Option<&'static str>,
) -> Seen {
    let mut seen = Seen::default();
    within(120, async {
        loop {
            let m = client.next_notification().await.unwrap();
            if m["params"]["taskId"] != task {
                continue;
            }
            match m["method"].as_str().unwrap() {
                "log.chunk" => {
                    assert_eq!(m["params"]["stream"], "event");
                    seen.events.push(
                        serde_json::from_str::<Value>(m["params"]["data"].as_str().unwrap())
                            .unwrap(),
                    );
                }
                "task.updated" => {
                    seen.statuses.push(m["params"].clone());
                    let status = m["params"]["status"].as_str().unwrap();
                    if ["succeeded", "failed", "cancelled", "interrupted"].contains(&status) {
                        return;
                    }
                }
                "permission.request" => {
                    seen.requests.push(m["params"].clone());
                    if let Some(decision) = on_request(&m["params"]) {
                        let id = m["params"]["requestId"].clone();
                        reply(client, &id, decision).await.unwrap();
                    }
                }
                "permission.resolved" => seen.resolved.push(m["params"].clone()),
                _ => {}
            }
        }
    })
    .await;
    seen
}

/// The next notification `method` about `task`.
async fn next_about(client: &mut Client, method: &str, task: &str) -> Value {
    within(60, async {
        loop {
            let m = client.next_notification().await.unwrap();
            if m["method"] == method && m["params"]["taskId"] == task {
                return m["params"].clone();
            }
        }
    })
    .await
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

fn rpc_error(err: &openwork_host::client::ClientError) -> &openwork_host::rpc::RpcError {
    match err {
        openwork_host::client::ClientError::Rpc(rpc) => rpc,
        other => panic!("not an RPC error: {other}"),
    }
}

/// Processes whose whole command line is `cmdline` (arguments joined by spaces).
fn pids_exact(cmdline: &str) -> Vec<i32> {
    processes()
        .into_iter()
        .filter(|(pid, _, line)| line == cmdline && alive(*pid))
        .map(|(pid, _, _)| pid)
        .collect()
}

/// The `opencode serve` the host with pid `host` started.
fn opencode_child(host: u32) -> Option<i32> {
    processes()
        .into_iter()
        .find(|(pid, parent, line)| {
            *parent == host as i32 && line.contains(" serve --hostname") && alive(*pid)
        })
        .map(|(pid, _, _)| pid)
}

/// Every process: pid, parent pid, command line.
fn processes() -> Vec<(i32, i32, String)> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let (Ok(cmdline), Ok(stat)) = (
            std::fs::read(entry.path().join("cmdline")),
            std::fs::read_to_string(entry.path().join("stat")),
        ) else {
            continue;
        };
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let line = String::from_utf8_lossy(&cmdline)
            .trim_end_matches('\0')
            .replace('\0', " ");
        all.push((pid, parent, line));
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_runs_end_to_end_through_a_permission_request() {
    let Some(binary) = opencode_binary() else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let model = FakeModel::start("echo hello-from-opencode").await;
    // This project's opencode.json asks before every command.
    let host = opencode_host(&model.opencode_json(), &binary, "").await;
    let mut client = host.connect().await;
    let task = run(
        &mut client,
        json!({"runtime": "opencode", "prompt": "say hello", "model": "fake/fake-model", "agent": "build"}),
    )
    .await;
    let seen = collect(&mut client, &task, |_| Some("once")).await;
    assert_eq!(seen.requests.len(), 1, "{:?}", seen.requests);
    let request = &seen.requests[0];
    assert_eq!(request["tool"], "bash");
    assert!(
        request["summary"]
            .as_str()
            .unwrap()
            .contains("echo hello-from-opencode"),
        "{request}"
    );
    assert!(
        request["detail"]
            .as_str()
            .unwrap()
            .contains("OpenCode's configuration asks"),
        "{request}"
    );
    assert!(
        request["options"]
            .as_array()
            .unwrap()
            .contains(&json!("always"))
    );
    assert_eq!(
        seen.statuses(),
        ["running", "waiting_permission", "running", "succeeded"]
    );
    let kinds = kinds(&seen.events);
    assert_eq!(kinds.first().map(String::as_str), Some("session"));
    assert!(kinds.contains(&"tool:completed".to_owned()), "{kinds:?}");
    assert!(kinds.contains(&"reasoning".to_owned()), "{kinds:?}");
    let running = seen
        .events
        .iter()
        .find(|e| e["kind"] == "tool" && e["status"] == "running")
        .expect("the tool ran");
    assert_eq!(running["input"]["command"], "echo hello-from-opencode");
    let tool = seen
        .events
        .iter()
        .find(|e| e["kind"] == "tool" && e["status"] == "completed")
        .unwrap();
    assert_eq!(
        tool["output"].as_str().unwrap().trim(),
        "hello-from-opencode"
    );
    assert_eq!(seen.text(), "Done: the command ran.");
    assert!(
        model.models().iter().all(|m| m == "fake-model") && !model.models().is_empty(),
        "{:?}",
        model.models()
    );
    let record: Value = within(10, client.call("task.get", json!({"taskId": task})))
        .await
        .unwrap();
    assert_eq!(record["runtime"], "opencode");
    assert_eq!(record["prompt"], "say hello");
    assert_eq!(record["model"], "fake/fake-model");
    assert_eq!(record["agent"], "build");
    let session = record["sessionId"].as_str().unwrap().to_owned();
    assert!(session.starts_with("ses"), "{record}");
    let trail = audit(&mut client, &task).await;
    let events: Vec<&str> = trail.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["requested", "decided"]);
    assert_eq!(
        trail[0]["rule"], "opencode:bash",
        "why it asked: {}",
        trail[0]
    );
    assert_eq!(trail[0]["taskStartedBy"], "local");
    assert_eq!(trail[1]["actor"], "local");
    assert_eq!(trail[1]["decision"], "once");

    // The same session continues with sessionId, one task at a time.
    let again = run(
        &mut client,
        json!({"runtime": "opencode", "prompt": "again", "sessionId": session}),
    )
    .await;
    let request = next_about(&mut client, "permission.request", &again).await;
    let err = within(
        10,
        client.call::<_, Value>(
            "task.run",
            json!({"runtime": "opencode", "prompt": "meanwhile", "sessionId": session}),
        ),
    )
    .await
    .unwrap_err();
    let rpc = rpc_error(&err);
    assert_eq!(rpc.code.0, -32004, "{err}");
    assert!(rpc.message.contains(&session), "{err}");
    assert!(rpc.action().unwrap().contains("sessionId"), "{err}");
    // `always` is remembered by the host, which then answers OpenCode itself.
    let reply: Value = reply(&mut client, &request["requestId"], "always")
        .await
        .unwrap();
    let rule = reply["ruleIds"][0].as_str().unwrap().to_owned();
    let seen = collect(&mut client, &again, |r| panic!("asked twice: {r}")).await;
    assert_eq!(seen.last_status()["status"], "succeeded");
    assert_eq!(
        seen.answers()[0]["decision"],
        "always",
        "{:?}",
        seen.answers()
    );
    assert_eq!(
        seen.answers()[0]["reply"],
        "once",
        "OpenCode is told `once`, so that it keeps asking the host"
    );
    let decided = audit(&mut client, &again).await;
    assert_eq!(
        decided.last().unwrap()["rule"],
        rule.as_str(),
        "{decided:?}"
    );
    let third = run(
        &mut client,
        json!({"runtime": "opencode", "prompt": "once more", "sessionId": session}),
    )
    .await;
    let seen = collect(&mut client, &third, |r| {
        panic!("asked again after always: {r}")
    })
    .await;
    assert_eq!(seen.statuses(), ["running", "succeeded"]);
    // OpenCode asked, and the host's remembered rule answered.
    let answer = seen.answers()[0];
    assert_eq!(answer["reply"], "once");
    assert!(
        answer["reason"].as_str().unwrap().contains("remembered"),
        "{answer}"
    );
    let rules: Value = within(10, client.call("permission.rules", json!({})))
        .await
        .unwrap();
    assert_eq!(rules["rules"][0]["ruleId"], rule.as_str());
    assert_eq!(rules["rules"][0]["runtime"], "opencode");
    assert_eq!(rules["rules"][0]["kind"], "bash");
    let _: Value = within(
        10,
        client.call("permission.forget", json!({"ruleId": rule})),
    )
    .await
    .unwrap();
    let fourth = run(
        &mut client,
        json!({"runtime": "opencode", "prompt": "after forgetting", "sessionId": session}),
    )
    .await;
    let seen = collect(&mut client, &fourth, |_| Some("reject")).await;
    assert_eq!(
        seen.requests.len(),
        1,
        "forgetting the rule brings the prompt back"
    );
    assert_eq!(seen.last_status()["status"], "succeeded");
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
        operations.contains(&json!("opencode.session.shell")),
        "the owner may call every operation"
    );
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

    // A session that ran a prompt has its messages.
    let task = run(
        &mut client,
        json!({"runtime": "opencode", "prompt": "tell me about the api"}),
    )
    .await;
    let seen = collect(&mut client, &task, |_| Some("once")).await;
    assert_eq!(seen.last_status()["status"], "succeeded");
    let record: Value = within(10, client.call("task.get", json!({"taskId": task})))
        .await
        .unwrap();
    let messages: Value = within(
        20,
        client.call(
            "opencode.session.messages",
            json!({"sessionID": record["sessionId"]}),
        ),
    )
    .await
    .unwrap();
    let messages = messages.as_array().unwrap();
    assert_eq!(messages[0]["info"]["role"], "user");
    assert!(
        messages[0].to_string().contains("tell me about the api"),
        "{}",
        messages[0]
    );
    assert!(
        messages.iter().any(|m| m["info"]["role"] == "assistant"
            && m.to_string().contains("Done: the command ran.")),
        "{messages:?}"
    );

    // OpenCode's errors keep its message, with a fitting code.
    let err = within(
        20,
        client.call::<_, Value>("opencode.session.get", json!({"sessionID": "ses_missing"})),
    )
    .await
    .unwrap_err();
    let rpc = rpc_error(&err);
    assert_eq!(rpc.code.0, -32003, "OpenCode's 404: {err}");
    let data = rpc.data.as_ref().unwrap();
    assert_eq!(data["httpStatus"], 404, "{err}");
    let theirs = data["opencode"]["data"]["message"]
        .as_str()
        .or(data["opencode"]["message"].as_str())
        .unwrap_or_else(|| panic!("OpenCode's message is kept: {err}"));
    assert!(rpc.message.contains(theirs), "{err}");
    let err = within(
        20,
        client.call::<_, Value>("opencode.session.get", json!({})),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("sessionID"), "{err}");
    let err = within(
        20,
        client.call::<_, Value>("opencode.session.list", json!({"bogus": 1})),
    )
    .await
    .unwrap_err();
    let rpc = rpc_error(&err);
    assert_eq!(rpc.code.0, -32602, "{err}");
    assert!(
        rpc.message.contains("`bogus`") && rpc.message.contains("`directory`"),
        "unknown params are named, with those accepted: {err}"
    );
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

    // Devices: the opencode scope covers prompts, and commands, OpenCode's
    // configuration and its permission answers need admin as well.
    let reader = host
        .pair_device("reader", Some(vec![Scope::TasksRead, Scope::TasksRun]))
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
    let err = within(
        20,
        device.call::<_, Value>("task.run", json!({"runtime": "opencode", "prompt": "hi"})),
    )
    .await
    .unwrap_err();
    let rpc = rpc_error(&err);
    assert_eq!(rpc.code.0, -32002, "{err}");
    assert_eq!(rpc.data.as_ref().unwrap()["scope"], "opencode", "{err}");
    let agent = host
        .pair_device("agent-user", Some(vec![Scope::Opencode]))
        .await;
    let mut device = device_session(&agent).await;
    let capabilities: Value = within(10, device.call("capabilities.get", json!({})))
        .await
        .unwrap();
    let operations = capabilities["opencode"]["operations"].as_array().unwrap();
    assert!(operations.contains(&json!("opencode.session.list")));
    assert!(!operations.contains(&json!("opencode.session.shell")));
    let _: Value = within(20, device.call("opencode.session.list", json!({})))
        .await
        .unwrap();
    let rules = json!([{"permission": "bash", "pattern": "*", "action": "allow"}]);
    for (method, params) in [
        (
            "opencode.session.shell",
            json!({"sessionID": id, "agent": "build", "command": "id"}),
        ),
        (
            "opencode.permission.reply",
            json!({"requestID": "per_x", "reply": "once"}),
        ),
        ("opencode.config.update", json!({"permission": rules})),
        (
            "opencode.session.create",
            json!({"title": "loose", "permission": rules}),
        ),
        ("opencode.pty.create", json!({})),
    ] {
        let err = within(20, device.call::<_, Value>(method, params))
            .await
            .unwrap_err();
        let rpc = rpc_error(&err);
        assert_eq!(rpc.code.0, -32002, "{method}: {err}");
        assert_eq!(
            rpc.data.as_ref().unwrap()["scope"],
            "admin",
            "{method}: {err}"
        );
    }

    // A host with the wrong password for that server says what to fix.
    let mut wrong = TestHost::new(&format!(
        "[opencode]\nenabled = \"on\"\nurl = {:?}\npassword = \"not-the-password\"\n",
        server.url
    ));
    wrong.start();
    let mut client = wrong.connect().await;
    let check = within(30, async {
        loop {
            let health: Value = client.call("health.get", json!({})).await.unwrap();
            let check = health["checks"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == "runtime.opencode")
                .unwrap()
                .clone();
            if check["ok"] == false {
                return check;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        check["message"].as_str().unwrap().contains("401"),
        "{check}"
    );
    let action = check["action"].as_str().unwrap();
    assert!(
        action.contains(&server.url) && action.contains("password"),
        "{check}"
    );
}

/// Runs one prompt whose tool call is `command` and returns what was seen.
async fn prompt(
    client: &mut Client,
    model: &FakeModel,
    command: &str,
    on_request: impl Fn(&Value) -> Option<&'static str>,
) -> (String, Seen) {
    model.set_command(command);
    let task = run(
        client,
        json!({"runtime": "opencode", "prompt": format!("please: {command}")}),
    )
    .await;
    let seen = collect(client, &task, on_request).await;
    (task, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_policy_judges_every_command_even_where_opencode_would_not_ask() {
    let Some(binary) = opencode_binary() else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let model = FakeModel::start("rm -rf /").await;
    // OpenCode alone would run every command but `git push` without asking,
    // and in sub-agents only `general` asks before commands.
    let config = model.opencode_json_with(
        json!({"bash": {"*": "allow", "git push *": "deny"}}),
        json!({"general": {"permission": {"bash": "ask"}}}),
    );
    let host = opencode_host(&config, &binary, "").await;
    std::fs::write(host.work.join("notes.txt"), "notes").unwrap();
    let mut client = host.connect().await;
    let nobody = |r: &Value| -> Option<&'static str> { panic!("a person was asked: {r}") };

    // A deny rule of the host's policy: rejected, and no one is asked.
    let (task, seen) = prompt(&mut client, &model, "rm -rf /", nobody).await;
    let denial = seen.answers()[0];
    assert_eq!(denial["reply"], "reject");
    assert!(
        denial["reason"]
            .as_str()
            .unwrap()
            .contains("deletes every file"),
        "{denial}"
    );
    assert_eq!(
        seen.last_status()["status"],
        "succeeded",
        "the agent's turn still ends"
    );
    let trail = audit(&mut client, &task).await;
    assert_eq!(trail[0]["event"], "denied");
    assert_eq!(trail[0]["rule"], "delete-everything");

    // What no rule names runs without asking anyone.
    let (_, seen) = prompt(&mut client, &model, "echo plain", nobody).await;
    assert_eq!(seen.answers()[0]["reply"], "once");
    let tool = seen
        .events
        .iter()
        .find(|e| e["kind"] == "tool" && e["status"] == "completed")
        .expect("the command ran");
    assert_eq!(tool["output"].as_str().unwrap().trim(), "plain");

    // An ask rule of the host's policy asks a person, though OpenCode would not.
    let (task, seen) = prompt(&mut client, &model, "chmod 600 notes.txt", |_| Some("once")).await;
    assert_eq!(seen.requests.len(), 1);
    assert!(
        seen.requests[0]["summary"]
            .as_str()
            .unwrap()
            .contains("changes who may read"),
        "{}",
        seen.requests[0]
    );
    assert_eq!(audit(&mut client, &task).await[0]["rule"], "permissions");

    // What OpenCode's own configuration denies stays denied, by OpenCode.
    let (_, seen) = prompt(&mut client, &model, "git push origin main", nobody).await;
    assert!(seen.answers().is_empty(), "{:?}", seen.answers());
    let refused = seen
        .events
        .iter()
        .find(|e| e["kind"] == "tool" && e["status"] == "error")
        .unwrap_or_else(|| panic!("{:?}", kinds(&seen.events)));
    assert_eq!(refused["input"]["command"], "git push origin main");
    assert!(
        refused["error"].as_str().unwrap().contains("git push *"),
        "{refused}"
    );

    // A sub-agent that would run commands unasked is refused...
    let (_, seen) = prompt(&mut client, &model, "TASK:explore:echo unseen", nobody).await;
    let denial = seen.answers()[0];
    assert_eq!(denial["permission"], "task");
    assert_eq!(denial["reply"], "reject");
    assert!(
        denial["reason"].as_str().unwrap().contains("`explore`"),
        "{denial}"
    );
    assert_eq!(seen.last_status()["status"], "succeeded");

    // ...and one that asks before commands runs, its asks reaching people.
    let (_, seen) = prompt(
        &mut client,
        &model,
        "TASK:general:echo from-a-subagent",
        |_| Some("once"),
    )
    .await;
    assert_eq!(seen.requests.len(), 1, "{:?}", seen.requests);
    assert!(
        seen.requests[0]["summary"]
            .as_str()
            .unwrap()
            .contains("echo from-a-subagent")
    );
    let child = seen
        .events
        .iter()
        .find(|e| e["kind"] == "subagent")
        .expect("the sub-agent's session is followed");
    let child = child["sessionId"].as_str().unwrap();
    let ran = seen
        .events
        .iter()
        .find(|e| e["kind"] == "tool" && e["status"] == "completed" && e["sessionId"] == child)
        .unwrap_or_else(|| panic!("{:?}", kinds(&seen.events)));
    assert_eq!(ran["output"].as_str().unwrap().trim(), "from-a-subagent");
    assert_eq!(seen.last_status()["status"], "succeeded");

    // A model that fails ends the task with OpenCode's error.
    model.fail_next(400, "the fake model refuses");
    let (_, seen) = prompt(&mut client, &model, "echo never", nobody).await;
    let last = seen.last_status();
    assert_eq!(last["status"], "failed", "{last}");
    assert!(
        last["error"]
            .as_str()
            .unwrap()
            .contains("the fake model refuses"),
        "{last}"
    );
    assert!(kinds(&seen.events).contains(&"error".to_owned()));

    // A model that is busy for a moment is retried, and the task shows it.
    model.fail_next(503, "the fake model is busy");
    let (_, seen) = prompt(&mut client, &model, "echo after-a-retry", nobody).await;
    let retry = seen
        .events
        .iter()
        .find(|e| e["kind"] == "retry")
        .unwrap_or_else(|| panic!("{:?}", kinds(&seen.events)));
    assert_eq!(retry["attempt"], 1, "{retry}");
    assert!(
        retry["message"].as_str().unwrap().contains("busy"),
        "{retry}"
    );
    assert_eq!(seen.last_status()["status"], "succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opencode_killed_mid_task_fails_the_task_and_is_restarted() {
    let Some(binary) = opencode_binary() else {
        return;
    };
    let _serial = SERIAL.lock().await;
    // A command line no other process on the machine has.
    let sleeper = format!("sleep 3{}", std::process::id());
    let model = FakeModel::start(&sleeper).await;
    let mut host = opencode_host(&model.opencode_json(), &binary, "").await;
    let mut client = host.connect().await;
    let task = run(
        &mut client,
        json!({"runtime": "opencode", "prompt": "wait"}),
    )
    .await;
    let request = next_about(&mut client, "permission.request", &task).await;
    reply(&mut client, &request["requestId"], "once")
        .await
        .unwrap();
    // OpenCode marks the tool running before it asks; once answered, the
    // command itself runs, silently: wait for its process.
    wait_until(30, "the tool's sleep", || !pids_exact(&sleeper).is_empty());
    let server = opencode_child(host.pid()).expect("the host's OpenCode runs");
    signal(server as u32, nix::sys::signal::Signal::SIGKILL);
    let followed = follow(&mut client, &task, 60).await;
    let last = followed.last();
    assert_eq!(last.status, openwork_host::protocol::TaskStatus::Failed);
    assert!(
        last.error.as_deref().unwrap().contains("OpenCode stopped"),
        "{last:?}"
    );
    // The dead server's tools go with it.
    wait_until(10, "the orphaned tool to be stopped", || {
        pids_exact(&sleeper).is_empty()
    });
    // Health says it is restarting, why, and how many times it tried.
    let restarting = within(20, async {
        loop {
            let opencode = opencode_health(&mut client).await;
            if opencode["state"] == "restarting" {
                return opencode;
            }
            assert_ne!(
                opencode["state"], "ready",
                "health never showed the restart"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let message = restarting["message"].as_str().unwrap();
    assert!(
        message.contains("attempt 1") && message.contains("SIGKILL"),
        "{restarting}"
    );
    // A client that connects meanwhile learns the operations once OpenCode is back.
    let mut late = host.connect().await;
    let init: Value = within(10, late.call("initialize", json!({})))
        .await
        .unwrap();
    assert_ne!(init["capabilities"]["opencode"]["state"], "ready");
    assert_eq!(init["capabilities"]["opencode"]["operations"], json!([]));
    let now: Value = within(
        70,
        late.call("capabilities.get", json!({"opencodeWaitS": 60})),
    )
    .await
    .unwrap();
    assert_eq!(now["opencode"]["state"], "ready", "{now}");
    assert!(
        now["opencode"]["operations"]
            .as_array()
            .unwrap()
            .contains(&json!("opencode.session.list"))
    );
    model.set_command("echo back");
    let again = run(
        &mut client,
        json!({"runtime": "opencode", "prompt": "after the crash"}),
    )
    .await;
    let seen = collect(&mut client, &again, |_| Some("once")).await;
    assert_eq!(seen.last_status()["status"], "succeeded");

    // The host stops its OpenCode when it stops.
    let server = opencode_child(host.pid()).expect("OpenCode runs again");
    drop(client);
    drop(late);
    let status = host.terminate();
    assert!(status.success(), "{status}");
    wait_until(10, "OpenCode to stop with the host", || !alive(server));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_aborts_the_opencode_session_and_closes_its_request() {
    let Some(binary) = opencode_binary() else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let model = FakeModel::start("echo answered-elsewhere").await;
    let host = opencode_host(&model.opencode_json(), &binary, "").await;
    let mut client = host.connect().await;

    // Answered in OpenCode itself: the people asked here learn it.
    let task = run(&mut client, json!({"runtime": "opencode", "prompt": "ask"})).await;
    let request = next_about(&mut client, "permission.request", &task).await;
    let pending: Value = within(20, client.call("opencode.permission.list", json!({})))
        .await
        .unwrap();
    let ask = pending.as_array().unwrap()[0]["id"].clone();
    let _: Value = within(
        20,
        client.call(
            "opencode.permission.reply",
            json!({"requestID": ask, "reply": "once"}),
        ),
    )
    .await
    .unwrap();
    let seen = collect(&mut client, &task, |r| panic!("asked again: {r}")).await;
    assert_eq!(seen.last_status()["status"], "succeeded");
    let resolved = &seen.resolved[0];
    assert_eq!(resolved["requestId"], request["requestId"]);
    assert_eq!(resolved["decision"], "once");
    assert_eq!(resolved["by"], "another OpenCode client");
    let decided = audit(&mut client, &task).await;
    assert_eq!(decided.last().unwrap()["actor"], "opencode", "{decided:?}");

    // Cancelled while a person is asked: the request is withdrawn for all.
    model.set_command("sleep 30");
    let task = run(
        &mut client,
        json!({"runtime": "opencode", "prompt": "wait"}),
    )
    .await;
    let request = next_about(&mut client, "permission.request", &task).await;
    let record: Value = within(30, client.call("task.cancel", json!({"taskId": task})))
        .await
        .unwrap();
    assert_eq!(record["status"], "cancelled");
    let resolved = next_about(&mut client, "permission.resolved", &task).await;
    assert_eq!(resolved["requestId"], request["requestId"]);
    assert_eq!(resolved["decision"], "reject");
    assert_eq!(resolved["by"], "the task being cancelled");
    let trail = audit(&mut client, &task).await;
    let last = trail.last().unwrap();
    assert_eq!(last["event"], "withdrawn", "{trail:?}");
    assert_eq!(last["summary"], "the task being cancelled");
    let err = reply(&mut client, &request["requestId"], "once")
        .await
        .unwrap_err();
    let rpc = rpc_error(&err);
    assert_eq!(rpc.code.0, -32004, "{err}");
    assert!(rpc.message.contains("the task being cancelled"), "{err}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_prompt_waits_as_queued_while_the_only_slot_is_taken() {
    let Some(binary) = opencode_binary() else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let model = FakeModel::start("echo held").await;
    let host = opencode_host(&model.opencode_json(), &binary, "max_concurrent = 1\n").await;
    let mut first_client = host.connect().await;
    let mut second_client = host.connect().await;

    // The first prompt holds the only slot: it is running, waiting for a person.
    let first = run(
        &mut first_client,
        json!({"runtime": "opencode", "prompt": "first"}),
    )
    .await;
    let request = next_about(&mut first_client, "permission.request", &first).await;
    let result: Value = within(
        10,
        second_client.call(
            "task.run",
            json!({"runtime": "opencode", "prompt": "second"}),
        ),
    )
    .await
    .unwrap();
    assert_eq!(result["status"], "queued");
    let second = result["taskId"].as_str().unwrap().to_owned();
    // Still queued after a round trip through OpenCode, with no session.
    let _: Value = within(20, first_client.call("opencode.permission.list", json!({})))
        .await
        .unwrap();
    let record: Value = within(10, first_client.call("task.get", json!({"taskId": second})))
        .await
        .unwrap();
    assert_eq!(record["status"], "queued", "{record}");
    assert!(record["sessionId"].is_null(), "{record}");
    assert!(record["startedAt"].is_null(), "{record}");

    // Once the first has ended, the second runs (and is asked in turn).
    reply(&mut first_client, &request["requestId"], "once")
        .await
        .unwrap();
    let seen = collect(&mut first_client, &first, |r| panic!("asked again: {r}")).await;
    assert_eq!(seen.last_status()["status"], "succeeded");
    let seen = collect(&mut second_client, &second, |_| Some("once")).await;
    assert_eq!(seen.statuses()[0], "running", "{:?}", seen.statuses);
    assert_eq!(seen.last_status()["status"], "succeeded");
    let first: Value = within(10, first_client.call("task.get", json!({"taskId": first})))
        .await
        .unwrap();
    let second: Value = within(10, first_client.call("task.get", json!({"taskId": second})))
        .await
        .unwrap();
    let (ended, started) = (
        first["finishedAt"].as_str().unwrap(),
        second["startedAt"].as_str().unwrap(),
    );
    assert!(
        started >= ended,
        "the second started at {started}, before the first ended at {ended}"
    );
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
