//! The OpenCode bridge's cost, printed as figures (not a timed test): the
//! latency of `opencode.session.list` through the host over TLS, next to the
//! same call made directly to `opencode serve` over HTTP in the same run, and
//! `$/ping` over the same TLS connection as the round trip the bridge adds.
//! Goal: bridge p50 at most 1.1 × direct p50 + the TLS round trip.
//!
//! Needs the pinned OpenCode (`scripts/test` installs it, or set
//! `OPENWORK_TEST_OPENCODE`). Run: `cargo bench --bench opencode`
//! (`BENCH_CALLS` changes the number of calls).

use std::time::{Duration, Instant};

use openwork_host::client::open_session;
use serde_json::{Value, json};

#[path = "../tests/common/opencode_server.rs"]
mod opencode_server;
mod support;

use opencode_server::OpencodeServer;
use support::{BenchHost, env_number, ms, percentile};

fn summary(label: &str, mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    let p50 = percentile(&samples, 0.50);
    println!(
        "{label:<34} p50 {:>7.3} ms   p90 {:>7.3} ms   p99 {:>7.3} ms",
        ms(p50),
        ms(percentile(&samples, 0.90)),
        ms(percentile(&samples, 0.99)),
    );
    p50
}

fn main() {
    let Some(binary) = opencode_server::installed_binary() else {
        eprintln!(
            "OpenCode is not installed: run scripts/test once (it installs it), or set OPENWORK_TEST_OPENCODE"
        );
        std::process::exit(2);
    };
    let calls: usize = env_number("BENCH_CALLS", 500);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let (data, work) = (dir.path().join("data"), dir.path().join("work"));
        std::fs::create_dir_all(&data).expect("data dir");
        std::fs::create_dir_all(&work).expect("work dir");
        let work = work.canonicalize().expect("work dir");
        let server = OpencodeServer::start(
            &binary,
            &work,
            &dir.path().join("oc-home"),
            Duration::from_secs(120),
        )
        .await;
        std::fs::write(
            data.join("config.toml"),
            format!(
                "[tasks]\nworkspace_roots = [{:?}]\n[opencode]\nenabled = \"on\"\nurl = {:?}\npassword = {:?}\n",
                work.display().to_string(),
                server.url,
                server.password
            ),
        )
        .expect("config");
        let host = BenchHost::start_in(dir, data, work.clone());
        let device = host.pair_device().await;
        let mut conn = open_session(&device, "bench").await.expect("session");
        // Ready once the host has read OpenCode's API.
        let mut ready = false;
        for _ in 0..600 {
            if conn
                .call::<_, Value>("opencode.session.list", json!({}))
                .await
                .is_ok()
            {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ready, "the host did not bridge OpenCode within 60 s");
        for title in ["one", "two", "three"] {
            let _: Value = conn
                .call("opencode.session.create", json!({"title": title}))
                .await
                .expect("create a session");
        }
        let path = format!(
            "/session?directory={}",
            work.display().to_string().replace('/', "%2F")
        );
        let direct_answer = server.get(&path).await.expect("direct call");
        let bridged_answer: Value = conn
            .call("opencode.session.list", json!({}))
            .await
            .expect("bridged call");
        assert_eq!(direct_answer, bridged_answer, "both ways give the same answer");
        println!(
            "openwork-host OpenCode bridge bench: {calls} calls each, {} sessions listed",
            direct_answer.as_array().map_or(0, Vec::len)
        );

        // Warm both paths, then alternate, so that both see the same machine.
        for _ in 0..50 {
            let _ = server.get(&path).await;
            let _: Value = conn.call("opencode.session.list", json!({})).await.expect("warm");
        }
        let (mut direct, mut bridged, mut pings) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..calls {
            let start = Instant::now();
            server.get(&path).await.expect("direct call");
            direct.push(start.elapsed());
            let start = Instant::now();
            let _: Value = conn
                .call("opencode.session.list", json!({}))
                .await
                .expect("bridged call");
            bridged.push(start.elapsed());
            let start = Instant::now();
            let _: Value = conn.call("$/ping", json!({})).await.expect("ping");
            pings.push(start.elapsed());
        }
        let direct = summary("direct HTTP to opencode serve:", direct);
        let bridged = summary("opencode.session.list over TLS:", bridged);
        let ping = summary("$/ping over the same TLS link:", pings);
        let budget = direct.mul_f64(1.1) + ping;
        println!(
            "bridge p50 / (1.1 x direct p50 + TLS round trip): {:.2} ({:.3} ms of a {:.3} ms budget)",
            bridged.as_secs_f64() / budget.as_secs_f64(),
            ms(bridged),
            ms(budget)
        );
        drop(host);
        drop(server);
    });
}
