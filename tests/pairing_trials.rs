//! First-time pairing trials: the whole journey a new user makes, run many
//! times over networks made of namespaces this test creates, reporting the
//! share that paired on the first try and with at most one retry.
//!
//! The device side drives only the CLI and follows only what it prints: it
//! reads the window `openwork-host pair --detach --json` printed, looks for
//! the host with `client discover`, pairs by the name it found or else by the
//! address `pair` printed, and on a failure tries once more the way the
//! failure suggests (the printed address after the name, or the same again).
//! The owner approves with `openwork-host devices approve ID`.
//!
//! `cargo test --test pairing_trials` runs a few trials per scenario and
//! fails unless every one paired within one retry; `scripts/pairing-trials`
//! runs more (`PAIRING_TRIALS_RUNS`) and prints the table. mDNS runs only
//! inside the namespaces made here. Needs root (skipped otherwise, except
//! under `CI=true`).

mod common;
#[path = "common/netns.rs"]
mod netns;
use common::process;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{TestHost, bin, output_within, signal, wait_until};
use netns::{Lan, Running, namespaces_available};
use serde_json::Value;

static NEXT: AtomicU32 = AtomicU32::new(0);

fn ip(args: &[&str]) {
    let out = output_within(Command::new("ip").args(args), 20);
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn in_ns(ns: &str, script: &str) {
    let out = output_within(
        Command::new("ip").args(["netns", "exec", ns, "sh", "-c", script]),
        20,
    );
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Namespaces joined by veth pairs, deleted on drop (even after a panic).
struct Net {
    host_ns: String,
    client_ns: String,
    namespaces: Vec<String>,
    tag: String,
    links: u32,
}

impl Net {
    fn new() -> Net {
        let tag = format!(
            "{}t{}",
            std::process::id() % 100_000,
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut net = Net {
            host_ns: String::new(),
            client_ns: String::new(),
            namespaces: Vec::new(),
            tag,
            links: 0,
        };
        net.host_ns = net.namespace("h");
        net.client_ns = net.namespace("c");
        net
    }

    fn namespace(&mut self, role: &str) -> String {
        let name = format!("owp-{}-{role}", self.tag);
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        self.namespaces.push(name.clone());
        name
    }

    /// A veth pair between `a` and `b`, each end with an optional IPv4
    /// address (`10.x.y.z/n`) and its IPv6 link-local one; waits until both
    /// ends are up with a usable link-local address.
    fn link(&mut self, a: &str, a_ip: Option<&str>, b: &str, b_ip: Option<&str>) {
        self.links += 1;
        let (a_if, b_if) = (
            format!("p{}l{}a", self.tag, self.links),
            format!("p{}l{}b", self.tag, self.links),
        );
        ip(&[
            "link", "add", &a_if, "netns", a, "type", "veth", "peer", "name", &b_if, "netns", b,
        ]);
        for (ns, ifname, address) in [(a, &a_if, a_ip), (b, &b_if, b_ip)] {
            in_ns(
                ns,
                &format!("echo 0 > /proc/sys/net/ipv6/conf/{ifname}/accept_dad"),
            );
            if let Some(address) = address {
                ip(&["-n", ns, "addr", "add", address, "dev", ifname]);
            }
            ip(&["-n", ns, "link", "set", ifname, "up"]);
        }
        for (ns, ifname) in [(a, &a_if), (b, &b_if)] {
            wait_until(10, "a link-local address", || {
                let link = output_within(
                    Command::new("ip").args(["-n", ns, "-o", "link", "show", "dev", ifname]),
                    20,
                );
                let addr = output_within(
                    Command::new("ip").args(["-n", ns, "-6", "-o", "addr", "show", "dev", ifname]),
                    20,
                );
                let addr = String::from_utf8_lossy(&addr.stdout);
                String::from_utf8_lossy(&link.stdout).contains("state UP")
                    && addr.contains("fe80:")
                    && !addr.contains("tentative")
            });
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            let _ = process::status_within(Command::new("ip").args(["netns", "del", ns]), 10);
        }
    }
}

/// The networks the trials run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Network {
    /// One LAN, IPv4 and IPv6, multicast works.
    Lan,
    /// Host and device on two subnets joined by a router: multicast (mDNS)
    /// does not cross, unicast does, so only the manual address works.
    Routed,
    /// One link with IPv6 link-local addresses only.
    LinkLocalOnly,
    /// The host has two interfaces; the device is on the second one.
    TwoInterfaces,
}

fn build(network: Network) -> Net {
    let mut net = Net::new();
    let (h, c) = (net.host_ns.clone(), net.client_ns.clone());
    match network {
        Network::Lan => net.link(&h, Some("10.250.0.1/24"), &c, Some("10.250.0.2/24")),
        Network::LinkLocalOnly => net.link(&h, None, &c, None),
        Network::TwoInterfaces => {
            // The other network comes first, so it is the host's first interface.
            let other = net.namespace("o");
            net.link(&h, Some("10.249.0.1/24"), &other, Some("10.249.0.2/24"));
            net.link(&h, Some("10.250.0.1/24"), &c, Some("10.250.0.2/24"));
        }
        Network::Routed => {
            let router = net.namespace("r");
            net.link(&h, Some("10.250.1.1/24"), &router, Some("10.250.1.254/24"));
            net.link(&router, Some("10.250.2.254/24"), &c, Some("10.250.2.2/24"));
            in_ns(&router, "echo 1 > /proc/sys/net/ipv4/ip_forward");
            ip(&["-n", &h, "route", "add", "default", "via", "10.250.1.254"]);
            ip(&["-n", &c, "route", "add", "default", "via", "10.250.2.254"]);
        }
    }
    net
}

/// What the owner does.
#[derive(Clone, Copy, Debug)]
struct Owner {
    /// How long the owner takes to approve a request once it shows up.
    approve_after: Duration,
}

/// What the device's person does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Person {
    Patient,
    /// Presses Ctrl-C while waiting for approval, then runs the same command again.
    GivesUpOnce,
}

struct Scenario {
    name: &'static str,
    network: Network,
    owner: Owner,
    person: Person,
}

fn scenarios(slow: Duration) -> Vec<Scenario> {
    let prompt = Owner {
        approve_after: Duration::from_millis(300),
    };
    vec![
        Scenario {
            name: "discovery on",
            network: Network::Lan,
            owner: prompt,
            person: Person::Patient,
        },
        Scenario {
            name: "multicast blocked (manual address)",
            network: Network::Routed,
            owner: prompt,
            person: Person::Patient,
        },
        Scenario {
            name: "IPv6 link-local only",
            network: Network::LinkLocalOnly,
            owner: prompt,
            person: Person::Patient,
        },
        Scenario {
            name: "two interfaces",
            network: Network::TwoInterfaces,
            owner: prompt,
            person: Person::Patient,
        },
        Scenario {
            name: "owner slow to approve",
            network: Network::Lan,
            owner: Owner {
                approve_after: slow,
            },
            person: Person::Patient,
        },
        Scenario {
            name: "device gives up once, retries",
            network: Network::Lan,
            owner: Owner {
                approve_after: slow,
            },
            person: Person::GivesUpOnce,
        },
    ]
}

fn owner_cli(data: &Path, args: &[&str]) -> std::process::Output {
    output_within(
        Command::new(bin()).args(args).arg("--data-dir").arg(data),
        30,
    )
}

fn pending_requests(data: &Path) -> Vec<String> {
    let out = owner_cli(data, &["devices", "pending", "--json"]);
    serde_json::from_slice::<Value>(&out.stdout)
        .ok()
        .and_then(|s| s["pending"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|r| r["requestId"].as_str().map(str::to_owned))
        .collect()
}

/// The owner at the host: approves each request `approve_after` it shows up,
/// except those in `ignore`, until `stop`.
fn run_owner(
    data: PathBuf,
    owner: Owner,
    stop: Arc<AtomicBool>,
    ignore: Arc<std::sync::Mutex<Vec<String>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(180);
        let mut seen: Vec<String> = Vec::new();
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            for id in pending_requests(&data) {
                if seen.contains(&id) {
                    continue;
                }
                std::thread::sleep(owner.approve_after);
                if ignore.lock().unwrap().contains(&id) {
                    seen.push(id);
                    continue;
                }
                // Approving a request that was withdrawn meanwhile fails,
                // and the owner waits for the next one.
                let _ = owner_cli(&data, &["devices", "approve", &id]);
                seen.push(id);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
}

/// One `client pair` attempt by the device.
fn device(ns: &str, dir: &Path, args: &[&str]) -> Command {
    let mut command = Lan::command(ns, bin());
    command
        .arg("client")
        .arg("--client-dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null());
    command
}

#[derive(Default, Clone, Copy)]
struct Tally {
    runs: u32,
    first_try: u32,
    one_retry: u32,
    /// Paired by the name `discover` showed, or by the address `pair` printed.
    by_name: u32,
    by_address: u32,
    /// Runs where the address `pair` printed was reachable from the device.
    printed_reachable: u32,
}

/// How a pairing went: on which try, and by which target.
enum Outcome {
    FirstTry(Via),
    AfterRetry(Via),
    Failed(String),
}

#[derive(Clone, Copy)]
enum Via {
    Name,
    Address,
}

/// Whether a TCP connection from namespace `ns` to `address` (`host:port`) opens.
fn reachable(ns: &str, address: &str) -> bool {
    let Some((host, port)) = address.rsplit_once(':') else {
        return false;
    };
    let probe = format!("exec 3<>/dev/tcp/{}/{port}", host.trim_matches(['[', ']']));
    process::status_within(
        Lan::command(ns, "timeout").args(["3", "bash", "-c", &probe]),
        10,
    )
    .is_some_and(|s| s.success())
}

fn trial(scenario: &Scenario) -> (Outcome, bool) {
    let net = build(scenario.network);
    let host = TestHost::new("");
    let _ = std::fs::remove_file(host.socket());
    let _serve = Running(Some(
        Lan::command(&net.host_ns, bin())
            .args(["serve", "--log", "warn", "--data-dir"])
            .arg(&host.data)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the host"),
    ));
    let socket = host.socket();
    wait_until(20, "the host's socket", || {
        std::os::unix::net::UnixStream::connect(&socket).is_ok()
    });
    // The owner opens a window as the README says, for a script.
    let opened = owner_cli(&host.data, &["pair", "--detach", "--json"]);
    if !opened.status.success() {
        let why = format!("pair: {}", String::from_utf8_lossy(&opened.stderr));
        return (Outcome::Failed(why), false);
    }
    let window: Value = serde_json::from_slice(&opened.stdout).expect("pair --json");
    let code = window["code"].as_str().unwrap_or_default().to_owned();
    let printed = format!(
        "{}:{}",
        window["host"].as_str().unwrap_or_default(),
        window["port"]
    );
    let host_name = window["hostName"].as_str().unwrap_or_default().to_owned();
    let printed_reachable = reachable(&net.client_ns, &printed);

    let stop = Arc::new(AtomicBool::new(false));
    let ignore = Arc::new(std::sync::Mutex::new(Vec::new()));
    let owner = run_owner(
        host.data.clone(),
        scenario.owner,
        Arc::clone(&stop),
        Arc::clone(&ignore),
    );
    let client_dir = tempfile::tempdir().expect("client dir");

    // The device looks for the host first, as a new user would.
    let found = output_within(
        device(
            &net.client_ns,
            client_dir.path(),
            &["discover", "--json", "--timeout", "3"],
        ),
        30,
    );
    let discovered = serde_json::from_slice::<Value>(&found.stdout)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .any(|h| h["name"] == host_name.as_str());
    let first_target = if discovered {
        host_name.clone()
    } else {
        printed.clone()
    };
    let pair_args = |target: &str| -> Vec<String> {
        [
            "pair",
            target,
            "--code",
            &code,
            "--name",
            "trial-device",
            "--wait",
            "60",
        ]
        .map(str::to_owned)
        .to_vec()
    };

    let mut outcome = None;
    let mut last_error = String::new();
    let targets = [first_target.clone(), {
        // The retry: the same command after giving up; by the printed
        // address after a name that did not work; else the same again.
        if discovered && scenario.person == Person::Patient {
            printed.clone()
        } else {
            first_target.clone()
        }
    }];
    for (attempt, target) in targets.iter().enumerate() {
        let args = pair_args(target);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        if attempt == 0 && scenario.person == Person::GivesUpOnce {
            // Starts, waits until the owner sees it, then presses Ctrl-C.
            let mut child = device(&net.client_ns, client_dir.path(), &args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("client pair");
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut pending = Vec::new();
            while pending.is_empty() && Instant::now() < deadline {
                pending = pending_requests(&host.data);
                std::thread::sleep(Duration::from_millis(50));
            }
            ignore.lock().unwrap().extend(pending);
            // `ip netns exec` execs the client: the child is the client.
            signal(child.id(), nix::sys::signal::Signal::SIGINT);
            process::wait_within(&mut child, 10);
            last_error = "gave up (Ctrl-C) while waiting for approval".into();
            continue;
        }
        let out = output_within(device(&net.client_ns, client_dir.path(), &args), 120);
        if out.status.success() {
            let via = if *target == host_name {
                Via::Name
            } else {
                Via::Address
            };
            outcome = Some(if attempt == 0 {
                Outcome::FirstTry(via)
            } else {
                Outcome::AfterRetry(via)
            });
            break;
        }
        last_error = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        // A retry follows what the failure said: a pause asks for patience.
        if last_error.contains("wait") {
            std::thread::sleep(Duration::from_millis(2_500));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = owner.join();
    drop(net);
    let outcome = outcome.unwrap_or(Outcome::Failed(format!(
        "discovered: {discovered}; printed address {printed}; last error: {last_error}"
    )));
    (outcome, printed_reachable)
}

fn runs() -> u32 {
    std::env::var("PAIRING_TRIALS_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
        .clamp(1, 1000)
}

fn percent(part: u32, whole: u32) -> String {
    format!("{:.0} %", 100.0 * f64::from(part) / f64::from(whole.max(1)))
}

#[test]
fn first_time_pairing_succeeds_in_every_network_where_a_path_exists() {
    if !namespaces_available("first_time_pairing_succeeds_in_every_network_where_a_path_exists") {
        return;
    }
    let runs = runs();
    let slow = Duration::from_secs(
        std::env::var("PAIRING_TRIALS_SLOW_S")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5)
            .min(50),
    );
    let only = std::env::var("PAIRING_TRIALS_ONLY").ok();
    let mut table = Vec::new();
    let mut failures = Vec::new();
    for scenario in scenarios(slow) {
        if only.as_deref().is_some_and(|o| !scenario.name.contains(o)) {
            continue;
        }
        let mut tally = Tally::default();
        for run in 1..=runs {
            tally.runs += 1;
            let (outcome, printed_reachable) = trial(&scenario);
            tally.printed_reachable += u32::from(printed_reachable);
            match &outcome {
                Outcome::FirstTry(via) | Outcome::AfterRetry(via) => match via {
                    Via::Name => tally.by_name += 1,
                    Via::Address => tally.by_address += 1,
                },
                Outcome::Failed(_) => {}
            }
            match outcome {
                Outcome::FirstTry(_) => {
                    tally.first_try += 1;
                    tally.one_retry += 1;
                }
                Outcome::AfterRetry(_) => tally.one_retry += 1,
                Outcome::Failed(why) => {
                    eprintln!("{} run {run}: not paired: {why}", scenario.name);
                    failures.push(format!("{} run {run}: {why}", scenario.name));
                }
            }
        }
        table.push((scenario.name, tally));
    }
    println!();
    println!(
        "| {:<36} | {:>4} | {:>15} | {:>17} | {:>17} | {:>25} |",
        "scenario",
        "runs",
        "paired 1st try",
        "paired ≤ 1 retry",
        "by name / address",
        "printed address reachable"
    );
    println!(
        "|{:-<38}|{:->6}|{:->17}|{:->19}|{:->19}|{:->27}|",
        "", "", "", "", "", ""
    );
    for (name, t) in &table {
        println!(
            "| {:<36} | {:>4} | {:>15} | {:>17} | {:>17} | {:>25} |",
            name,
            t.runs,
            format!("{} ({})", percent(t.first_try, t.runs), t.first_try),
            format!("{} ({})", percent(t.one_retry, t.runs), t.one_retry),
            format!("{} / {}", t.by_name, t.by_address),
            format!("{} of {}", t.printed_reachable, t.runs),
        );
    }
    println!();
    assert!(
        failures.is_empty(),
        "not every first-time pairing succeeded within one retry:\n{}",
        failures.join("\n")
    );
}
