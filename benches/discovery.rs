//! LAN discovery latency, printed as figures: the time from starting a
//! browse to a resolved host (PTR, SRV, TXT and address), with the host
//! already advertising and settled, across two network namespaces joined by
//! a veth pair. Each round is a fresh browser, as `client discover` is.
//!
//! Needs root (it makes network namespaces). Run: `cargo bench --bench
//! discovery` (`BENCH_ROUNDS` sets the number of rounds, default 30).

#[path = "../tests/common/netns.rs"]
mod netns;
#[path = "../tests/common/process.rs"]
mod process;

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use openwork_host::client::connect_unix;
use openwork_host::discovery::Browser;
use serde_json::{Value, json};

/// Responders multicast a record at most once a second per interface (RFC
/// 6762 §6): rounds closer than that would measure the rate limit instead.
const ROUND_GAP: Duration = Duration::from_millis(1100);
const NAME: &str = "bench host";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Moves this thread (and the threads it starts) into namespace `ns`.
fn enter(ns: &str) {
    let file = std::fs::File::open(format!("/var/run/netns/{ns}")).expect("open the namespace");
    // SAFETY: setns on a namespace file we hold open; it affects only this thread.
    let done = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(done, 0, "setns: {}", std::io::Error::last_os_error());
}

fn main() {
    if !netns::namespaces_available("the discovery benchmark") {
        return;
    }
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(30)
        .max(1);
    let lan = netns::Lan::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    std::fs::write(
        data.join("config.toml"),
        format!(
            "[host]\nname = {NAME:?}\n[tasks]\nworkspace_roots = [{:?}]\n[opencode]\nenabled = \"off\"\n",
            dir.path().display().to_string()
        ),
    )
    .expect("config");
    let host = netns::Lan::command(&lan.host_ns, env!("CARGO_BIN_EXE_openwork-host"))
        .args(["serve", "--log", "warn", "--listen"])
        .arg(format!("{}:0", netns::HOST_IP))
        .arg("--data-dir")
        .arg(&data)
        .spawn()
        .expect("start the host");
    let _host = netns::Running(Some(host));

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let socket = data.join("host.sock");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut local) = connect_unix(&socket).await
                && let Ok(health) = local.call::<_, Value>("health.get", json!({})).await
                && health["discovery"]["state"] == "advertising"
            {
                break;
            }
            assert!(Instant::now() < deadline, "the host never advertised");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    // Let the host's two announcements go out: it is settled after that.
    std::thread::sleep(Duration::from_secs(2));

    let client_ns = lan.client_ns.clone();
    let (times, misses) = std::thread::spawn(move || {
        enter(&client_ns);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let mut times = Vec::with_capacity(rounds);
            let mut misses = 0;
            for _ in 0..rounds {
                tokio::time::sleep(ROUND_GAP).await;
                let start = Instant::now();
                let mut browser = Browser::start().expect("browse");
                match browser
                    .find(Duration::from_secs(5), |h| h.name == NAME)
                    .await
                {
                    Some(_) => times.push(start.elapsed()),
                    None => misses += 1,
                }
            }
            (times, misses)
        })
    })
    .join()
    .expect("the browsing thread");

    let mut sorted = times.clone();
    sorted.sort();
    println!(
        "discovery: browse start → resolved host (PTR+SRV+TXT+A), across namespaces, fresh browser each round"
    );
    if sorted.is_empty() {
        println!("  no round resolved the host ({misses} misses)");
        std::process::exit(1);
    }
    println!(
        "  rounds {}  misses {misses}  median {:.1} ms  p90 {:.1} ms  min {:.1} ms  max {:.1} ms",
        sorted.len(),
        ms(percentile(&sorted, 0.5)),
        ms(percentile(&sorted, 0.9)),
        ms(sorted[0]),
        ms(sorted[sorted.len() - 1]),
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
