//! LAN discovery for real: a host advertising with mDNS in one network
//! namespace, found, resolved and paired with from another, over a veth
//! pair the test makes. Nothing here touches the machine's own network.

mod common;
#[path = "common/netns.rs"]
mod netns;
use common::process;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{TestHost, answer_next_request, bin, output_within, wait_until, within};
use netns::{HOST_IP, Lan, Running, namespaces_available};
use serde_json::{Value, json};

/// A host served inside a namespace, with mDNS on.
struct NsHost {
    host: TestHost,
    process: Running,
}

impl NsHost {
    /// `extra` is config.toml text (see `TestHost::new`).
    fn start(ns: &str, extra: &str, listen: &str) -> NsHost {
        let host = TestHost::new(extra);
        let process = Self::spawn(ns, &host, listen);
        NsHost { host, process }
    }

    fn spawn(ns: &str, host: &TestHost, listen: &str) -> Running {
        let _ = std::fs::remove_file(host.socket());
        let child = Lan::command(ns, bin())
            .args(["serve", "--listen", listen, "--log", "warn", "--data-dir"])
            .arg(&host.data)
            .stdin(Stdio::null())
            .spawn()
            .expect("start the host");
        let socket = host.socket();
        wait_until(20, "the host's socket", || {
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
        });
        Running(Some(child))
    }

    /// Stops the host and serves the same data dir again on `listen`.
    fn restart(&mut self, ns: &str, listen: &str) {
        assert!(self.process.terminate(30).success());
        self.process = Self::spawn(ns, &self.host, listen);
    }

    async fn health(&self) -> Value {
        let mut local = self.host.connect().await;
        within(10, local.call("health.get", json!({})))
            .await
            .expect("health")
    }

    /// Waits until the advertiser reaches `state`; returns the health report.
    async fn discovery_state(&self, state: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let health = self.health().await;
            if health["discovery"]["state"] == state {
                return health;
            }
            assert!(
                Instant::now() < deadline,
                "discovery never became {state}: {}",
                health["discovery"]
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn tls_port(&self) -> u16 {
        let address = self.host.tls_address().await;
        address
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse().ok())
            .expect("a port")
    }
}

/// `openwork-host client …` inside namespace `ns` with its own hosts file.
fn client(ns: &str, dir: &Path, args: &[&str]) -> Command {
    let mut command = Lan::command(ns, bin());
    command
        .arg("client")
        .arg("--client-dir")
        .arg(dir)
        .args(args);
    command
}

fn discover(ns: &str, dir: &Path, secs: &str) -> Vec<Value> {
    let out = output_within(
        client(ns, dir, &["discover", "--json", "--timeout", secs]),
        30,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .expect("discover --json prints JSON")
        .as_array()
        .expect("a list")
        .clone()
}

/// A `client discover --watch --json` whose lines arrive on a channel.
struct Watch {
    _process: Running,
    lines: mpsc::Receiver<Value>,
}

impl Watch {
    fn start(ns: &str, dir: &Path) -> Watch {
        let mut child = client(
            ns,
            dir,
            &["discover", "--watch", "--json", "--timeout", "60"],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the browser");
        let stdout = child.stdout.take().expect("stdout");
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let value = serde_json::from_str(&line).expect("one JSON object a line");
                if send.send(value).is_err() {
                    return;
                }
            }
        });
        Watch {
            _process: Running(Some(child)),
            lines,
        }
    }

    /// The next event `wanted` accepts within `secs`, skipping others.
    fn until(&self, secs: u64, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(event) if wanted(&event) => return event,
                Ok(_) => continue,
                Err(_) => panic!("the browser did not see {what} within {secs} s"),
            }
        }
    }
}

fn known_hosts(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("hosts.toml")).expect("hosts.toml");
    let parsed: toml::Value = toml::from_str(&text).expect("toml");
    serde_json::to_value(parsed).expect("as json")
}

/// Pairs from the client namespace with `target` (a name or ADDR:PORT),
/// approving from the host's local socket.
async fn pair_from(ns: &str, dir: &Path, host: &NsHost, target: &str) -> std::process::Output {
    let mut owner = host.host.connect().await;
    let window: Value = within(10, owner.call("pairing.open", json!({"ttlS": 60})))
        .await
        .expect("pairing.open");
    let code = window["code"].as_str().expect("code").to_owned();
    let command = client(
        ns,
        dir,
        &["pair", target, "--code", &code, "--name", "phone"],
    );
    let pairing = std::thread::spawn(move || output_within(command, 40));
    answer_next_request(&mut owner, "pairing.approve").await;
    tokio::task::spawn_blocking(move || pairing.join().expect("join"))
        .await
        .expect("join")
}

fn client_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("client");
    (dir, path)
}

#[tokio::test]
async fn a_host_in_one_namespace_is_found_and_resolved_with_its_txt_record_from_another() {
    if !namespaces_available("found_and_resolved") {
        return;
    }
    let lan = Lan::new();
    let host = NsHost::start(
        &lan.host_ns,
        "[host]\nname = \"Ada's Desk\"",
        &format!("{HOST_IP}:0"),
    );
    let health = host.discovery_state("advertising").await;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["discovery"]["instance"], "Ada's Desk");
    assert_eq!(health["discovery"]["service"], "_openwork._tcp.local.");
    let port = host.tls_port().await;
    let (_tmp, dir) = client_dir();

    let found = discover(&lan.client_ns, &dir, "2");
    assert_eq!(found.len(), 1, "{found:?}");
    let desk = &found[0];
    assert_eq!(desk["name"], "Ada's Desk");
    assert_eq!(desk["addresses"], json!([HOST_IP]));
    assert_eq!(desk["port"], port);
    assert_eq!(desk["hostId"], health["hostId"]);
    assert_eq!(desk["fingerprint"], health["fingerprint"]);
    assert_eq!(desk["protocolVersion"], "1");
    assert_eq!(desk["pairingOpen"], false);
    assert_eq!(desk["paired"], false);

    let human = output_within(
        client(&lan.client_ns, &dir, &["discover", "--timeout", "1.5"]),
        30,
    );
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("Ada's Desk") && text.contains(&format!("{HOST_IP} ")),
        "{text}"
    );
}

#[tokio::test]
async fn a_discovered_host_is_paired_with_by_name_and_then_listed_as_paired() {
    if !namespaces_available("paired_by_name") {
        return;
    }
    let lan = Lan::new();
    let host = NsHost::start(
        &lan.host_ns,
        "[host]\nname = \"Lab Box\"",
        &format!("{HOST_IP}:0"),
    );
    let health = host.discovery_state("advertising").await;
    let port = host.tls_port().await;
    let (_tmp, dir) = client_dir();

    let out = pair_from(&lan.client_ns, &dir, &host, "Lab Box").await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("Looking for `Lab Box` on the LAN"),
        "{stderr}"
    );
    let stored = &known_hosts(&dir)["host"][0];
    assert_eq!(stored["name"], "Lab Box");
    assert_eq!(stored["host_id"], health["hostId"]);
    assert_eq!(stored["fingerprint"], health["fingerprint"]);
    assert_eq!(stored["address"], format!("{HOST_IP}:{port}"));

    // The window closed with the pairing, and the record says so.
    let found = discover(&lan.client_ns, &dir, "2");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["paired"], true);
    assert_eq!(found[0]["pairingOpen"], false);

    let unknown = output_within(
        client(
            &lan.client_ns,
            &dir,
            &[
                "pair",
                "No Such Host",
                "--code",
                "12345678",
                "--timeout",
                "1",
            ],
        ),
        30,
    );
    assert!(!unknown.status.success());
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(stderr.contains("no host called `No Such Host`"), "{stderr}");
}

#[tokio::test]
async fn a_running_browser_sees_the_pair_flag_flip_and_the_goodbye_at_shutdown() {
    if !namespaces_available("flag_and_goodbye") {
        return;
    }
    let lan = Lan::new();
    let mut host = NsHost::start(
        &lan.host_ns,
        "[host]\nname = \"flip\"",
        &format!("{HOST_IP}:0"),
    );
    host.discovery_state("advertising").await;
    let (_tmp, dir) = client_dir();
    let watch = Watch::start(&lan.client_ns, &dir);
    let resolved =
        |open: bool| move |e: &Value| e["event"] == "resolved" && e["host"]["pairingOpen"] == open;
    watch.until(10, "the host", resolved(false));

    let mut owner = host.host.connect().await;
    let _: Value = within(10, owner.call("pairing.open", json!({"ttlS": 60})))
        .await
        .expect("pairing.open");
    watch.until(10, "pair=1 after the window opened", resolved(true));
    let _: Value = within(10, owner.call("pairing.close", json!({})))
        .await
        .expect("pairing.close");
    watch.until(10, "pair=0 after the window closed", resolved(false));
    // A window that expires closes too.
    let _: Value = within(10, owner.call("pairing.open", json!({"ttlS": 3})))
        .await
        .expect("pairing.open");
    watch.until(10, "pair=1 again", resolved(true));
    watch.until(10, "pair=0 after the window expired", resolved(false));
    drop(owner);

    // Without a goodbye, browsers would keep the record for its TTL (minutes).
    let stopped = Instant::now();
    assert!(host.process.terminate(30).success());
    let removed = watch.until(10, "the goodbye", |e| e["event"] == "removed");
    assert_eq!(removed["name"], "flip");
    eprintln!("goodbye seen {:?} after SIGTERM", stopped.elapsed());
}

#[tokio::test]
async fn a_paired_host_that_moved_to_another_port_is_found_again_by_its_id() {
    if !namespaces_available("found_again") {
        return;
    }
    let lan = Lan::new();
    let mut host = NsHost::start(
        &lan.host_ns,
        "[host]\nname = \"mover\"",
        &format!("{HOST_IP}:47001"),
    );
    host.discovery_state("advertising").await;
    let (_tmp, dir) = client_dir();
    // Paired by address: the manual way, no discovery involved.
    let out = pair_from(&lan.client_ns, &dir, &host, &format!("{HOST_IP}:47001")).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("on the LAN"));

    host.restart(&lan.host_ns, &format!("{HOST_IP}:47002"));
    host.discovery_state("advertising").await;
    let out = output_within(
        client(
            &lan.client_ns,
            &dir,
            &["run", "--host", "mover", "--", "echo", "moved"],
        ),
        40,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "moved\n");
    assert!(
        stderr.contains("no longer answers at 10.250.0.1:47001")
            && stderr.contains("found it on the LAN at 10.250.0.1:47002"),
        "{stderr}"
    );
    assert_eq!(
        known_hosts(&dir)["host"][0]["address"],
        format!("{HOST_IP}:47002")
    );

    // Once saved, the next run goes straight there.
    let out = output_within(
        client(
            &lan.client_ns,
            &dir,
            &["run", "--host", "mover", "--", "true"],
        ),
        40,
    );
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("on the LAN"));
}

#[tokio::test]
async fn an_allow_list_naming_no_interface_fails_advertising_in_health_while_the_host_serves() {
    if !namespaces_available("allow_list_failure") {
        return;
    }
    let lan = Lan::new();
    let host = NsHost::start(
        &lan.host_ns,
        "[host]\nname = \"quiet\"\n[discovery]\ninterfaces = [\"ow-missing0\"]",
        &format!("{HOST_IP}:0"),
    );
    let health = host.discovery_state("failed").await;
    assert_eq!(health["status"], "degraded");
    let discovery = &health["discovery"];
    assert_eq!(discovery["instance"], "quiet");
    let message = discovery["message"].as_str().expect("message");
    assert!(
        message.contains("ow-missing0") && message.contains(&lan.host_if),
        "{message}"
    );
    let action = discovery["action"].as_str().expect("action");
    assert!(action.contains("[discovery] interfaces"), "{action}");
    let mut status = Command::new(bin());
    status.arg("status").arg("--data-dir").arg(&host.host.data);
    let status = String::from_utf8_lossy(&output_within(status, 20).stdout).into_owned();
    assert!(
        status.contains("(running): degraded") && status.contains("mdns          failed: "),
        "{status}"
    );
    let check = health["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "mdns"))
        .expect("an mdns check");
    assert_eq!(check["ok"], false, "{check}");
    assert!(
        check["action"]
            .as_str()
            .is_some_and(|a| a.contains("[discovery] interfaces")),
        "{check}"
    );

    // Nothing is advertised, and the manual fallback still pairs.
    let (_tmp, dir) = client_dir();
    assert_eq!(discover(&lan.client_ns, &dir, "1.5"), Vec::<Value>::new());
    let port = host.tls_port().await;
    let out = pair_from(&lan.client_ns, &dir, &host, &format!("{HOST_IP}:{port}")).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = output_within(
        client(
            &lan.client_ns,
            &dir,
            &["run", "--", "echo", "still serving"],
        ),
        30,
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "still serving\n");
}

#[tokio::test]
async fn a_namespace_without_a_multicast_interface_fails_advertising_visibly() {
    if !namespaces_available("no_multicast_interface") {
        return;
    }
    let lan = Lan::loopback_only();
    let host = NsHost::start(&lan.host_ns, "[host]\nname = \"alone\"", "127.0.0.1:0");
    let health = host.discovery_state("failed").await;
    assert_eq!(health["status"], "degraded");
    let message = health["discovery"]["message"].as_str().expect("message");
    assert!(message.contains("no network interface"), "{message}");
    assert!(health["discovery"]["action"].as_str().is_some());
    // The host serves its local clients all the same.
    let mut local = host.host.connect().await;
    let task = common::run(&mut local, json!({"argv": ["echo", "fine"]})).await;
    let followed = common::follow(&mut local, &task, 20).await;
    assert_eq!(followed.output(), b"fine\n");
}

#[tokio::test]
async fn an_independent_dns_sd_implementation_resolves_the_record() {
    if !namespaces_available("independent_browser") {
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/dnssd_browse.py");
    // scripts/test makes a venv with zeroconf and names its python here.
    let python = std::env::var("OPENWORK_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_zeroconf =
        common::status_within(Command::new(&python).args(["-c", "import zeroconf"]), 30)
            .is_some_and(|s| s.success());
    if !has_zeroconf {
        let why = "a python3 with the `zeroconf` package is needed (scripts/test installs one)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
        eprintln!("skipping independent_browser: {why}");
        return;
    }
    let lan = Lan::new();
    // UTF-8 and a dot inside the one label of the instance name (RFC 6763 §4.3).
    let host = NsHost::start(
        &lan.host_ns,
        "[host]\nname = \"Café Lab.2\"",
        &format!("{HOST_IP}:0"),
    );
    let health = host.discovery_state("advertising").await;
    let port = host.tls_port().await;
    let mut command = Lan::command(&lan.client_ns, &python);
    command.arg(&script).arg("5");
    let out = output_within(command, 30);
    assert!(
        out.status.success(),
        "python-zeroconf did not resolve the host: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(seen["fullname"], "Café Lab.2._openwork._tcp.local.");
    assert_eq!(seen["instance"], "Café Lab.2");
    assert_eq!(seen["port"], port);
    assert_eq!(seen["addresses"], json!([HOST_IP]));
    let server = seen["server"].as_str().expect("server");
    assert!(
        server.starts_with("openwork-") && server.ends_with(".local."),
        "{server}"
    );
    assert_eq!(
        seen["txt"],
        json!([
            "v=1",
            format!("id={}", health["hostId"].as_str().unwrap()),
            format!("fp={}", health["fingerprint"].as_str().unwrap()),
            "pair=0"
        ])
    );
}

#[tokio::test]
async fn a_host_on_ipv6_link_local_only_is_found_with_its_zone_and_paired_by_name() {
    if !namespaces_available("link_local") {
        return;
    }
    let lan = Lan::link_local_only();
    let host = NsHost::start(&lan.host_ns, "[host]\nname = \"v6 box\"", "[::]:0");
    host.discovery_state("advertising").await;
    let port = host.tls_port().await;
    let (_tmp, dir) = client_dir();
    let found = discover(&lan.client_ns, &dir, "2");
    assert_eq!(found.len(), 1, "{found:?}");
    let expected = format!("{}%{}", lan.host_link_local(), lan.client_if);
    assert_eq!(found[0]["addresses"], json!([expected]), "{found:?}");
    assert_eq!(found[0]["port"], port);

    let out = pair_from(&lan.client_ns, &dir, &host, "v6 box").await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let address = known_hosts(&dir)["host"][0]["address"]
        .as_str()
        .expect("address")
        .to_owned();
    assert!(
        address.starts_with(&format!("[{}%", lan.host_link_local())),
        "{address}"
    );
    let out = output_within(
        client(&lan.client_ns, &dir, &["run", "--", "echo", "over v6"]),
        30,
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "over v6\n");
}

#[tokio::test]
async fn a_host_paired_over_loopback_that_stopped_is_not_looked_for_on_the_lan() {
    // No namespace: nothing here may start mDNS in the machine's own network.
    let mut host = TestHost::started();
    let device = host.pair_device("laptop", None).await;
    let (_tmp, dir) = client_dir();
    let mut hosts = openwork_host::client::KnownHosts::load(&dir).unwrap();
    hosts.add(device);
    hosts.save().unwrap();
    host.terminate();
    let out = output_within(
        {
            let mut command = Command::new(bin());
            command.args(["client", "--client-dir"]).arg(&dir).args([
                "run",
                "--reconnect-timeout",
                "2s",
                "--",
                "true",
            ]);
            command
        },
        30,
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot reach"), "{stderr}");
    assert!(
        stderr.contains("connection refused; is `openwork-host serve` running there?"),
        "it is reported at once: {stderr}"
    );
    assert!(!stderr.contains("on the LAN"), "{stderr}");
}
