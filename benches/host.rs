//! Host benchmarks over the local socket, printed as figures (not a timed test).
//!
//! - a task writing 512 MiB to stdout, streamed to a subscribed client, next
//!   to a plain pipe of the same bytes in the same run, and the host's peak RSS;
//! - `$/ping` calls per second, sequential and with 32 in flight.
//!
//! Each workload streams `BENCH_RUNS` times (default 3); the median is shown.
//!
//! Run: `cargo bench --bench host` (set `BENCH_MIB` to change the volume,
//! `BENCH_WORKLOADS=seq,base64` to stream only the workloads whose names
//! contain one of those words).

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use openwork_host::client::connect_unix;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

mod support;
use support::{
    BenchHost, cpu_seconds, env_number, receive_output, repeated_line_command, status_kib,
};

/// The output a benchmark task writes, with how compressible it is: the host
/// stores chunks LZ4-compressed when that pays, so the figures depend on it.
struct Workload {
    name: &'static str,
    /// A shell command writing exactly `{bytes}` bytes to stdout; `None`
    /// for the default task, one process writing one line repeated.
    command: Option<&'static str>,
}

const WORKLOADS: &[Workload] = &[
    Workload {
        name: "one line repeated (one writer process)",
        command: None,
    },
    Workload {
        name: "one line repeated through `yes | head`",
        command: Some(
            "yes 'openwork benchmark line: the quick brown fox jumps over the lazy dog 0123456789' | head -c {bytes}",
        ),
    },
    Workload {
        name: "counting lines (seq | head)",
        command: Some("seq 1 1000000000000 | head -c {bytes}"),
    },
    Workload {
        name: "random base64 (incompressible)",
        command: Some("base64 -w 76 /dev/urandom | head -c {bytes}"),
    },
];

impl Workload {
    fn generator(&self, bytes: u64) -> String {
        match self.command {
            Some(command) => command.replace("{bytes}", &bytes.to_string()),
            None => repeated_line_command(bytes),
        }
    }
}

async fn plain_pipe(work: &Workload, bytes: u64) -> (u64, Duration) {
    let start = Instant::now();
    let mut child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(work.generator(bytes))
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the generator");
    let mut out = child.stdout.take().expect("stdout");
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = out.read(&mut buf).await.expect("read");
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    child.wait().await.expect("wait");
    (total, start.elapsed())
}

async fn streamed(socket: &Path, work: &Workload, bytes: u64, cwd: &Path) -> (u64, u64, Duration) {
    let mut conn = connect_unix(socket).await.expect("connect");
    let start = Instant::now();
    let _: Value = conn
        .call(
            "task.run",
            json!({"command": work.generator(bytes), "cwd": cwd}),
        )
        .await
        .expect("task.run");
    let (total, chunks) = receive_output(&mut conn).await;
    (total, chunks, start.elapsed())
}

async fn pings(socket: &Path) {
    let mut conn = connect_unix(socket).await.expect("connect");
    let n = 20_000;
    let start = Instant::now();
    for _ in 0..n {
        let _: Value = conn.call("$/ping", json!({})).await.expect("ping");
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "ping, sequential:      {:>9.0} calls/s ({n} calls)",
        n as f64 / secs
    );

    let total = 50_000u64;
    let in_flight = 32u64;
    let start = Instant::now();
    let mut sent = 0u64;
    let mut received = 0u64;
    while sent < in_flight {
        sent += 1;
        conn.send(&json!({"jsonrpc": "2.0", "id": sent, "method": "$/ping"}))
            .await
            .expect("send");
    }
    while received < total {
        let _ = conn.read_frame().await.expect("reply");
        received += 1;
        if sent < total {
            sent += 1;
            conn.send(&json!({"jsonrpc": "2.0", "id": sent, "method": "$/ping"}))
                .await
                .expect("send");
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "ping, 32 in flight:    {:>9.0} calls/s ({total} calls)",
        total as f64 / secs
    );
}

/// One streaming run of a workload, next to a plain pipe of the same bytes.
struct Run {
    pipe_rate: f64,
    host_rate: f64,
    host_time: Duration,
    chunks: u64,
    /// CPU seconds (user, system) while streaming.
    host_cpu: (f64, f64),
    client_cpu: (f64, f64),
}

async fn run_once(host: &BenchHost, workload: &Workload, bytes: u64) -> Run {
    let (pipe_bytes, pipe_time) = plain_pipe(workload, bytes).await;
    let (host_cpu0, client_cpu0) = (cpu_seconds(host.pid()), cpu_seconds(std::process::id()));
    let (host_bytes, chunks, host_time) =
        streamed(&host.socket(), workload, bytes, &host.work).await;
    let (host_cpu1, client_cpu1) = (cpu_seconds(host.pid()), cpu_seconds(std::process::id()));
    assert_eq!(pipe_bytes, bytes, "the plain pipe saw every byte");
    assert_eq!(host_bytes, bytes, "the client saw every byte");
    let mibs = |b: u64, t: Duration| b as f64 / (1024.0 * 1024.0) / t.as_secs_f64();
    Run {
        pipe_rate: mibs(pipe_bytes, pipe_time),
        host_rate: mibs(host_bytes, host_time),
        host_time,
        chunks,
        host_cpu: (host_cpu1.0 - host_cpu0.0, host_cpu1.1 - host_cpu0.1),
        client_cpu: (client_cpu1.0 - client_cpu0.0, client_cpu1.1 - client_cpu0.1),
    }
}

/// Streams a workload `runs` times; prints every run's rate and the details
/// of the median run (this VM's figures vary by a third from run to run).
async fn stream_workload(host: &BenchHost, workload: &Workload, bytes: u64, runs: usize) {
    let mut all = Vec::with_capacity(runs);
    for _ in 0..runs {
        all.push(run_once(host, workload, bytes).await);
    }
    all.sort_by(|a, b| a.host_rate.total_cmp(&b.host_rate));
    let rates: Vec<String> = all.iter().map(|r| format!("{:.0}", r.host_rate)).collect();
    let median = &all[all.len() / 2];
    println!("-- {}", workload.name);
    println!(
        "streamed via host:     {:>9.1} MiB/s median ({:.2} s); runs, sorted: {} MiB/s",
        median.host_rate,
        median.host_time.as_secs_f64(),
        rates.join(", ")
    );
    println!(
        "plain pipe:            {:>9.1} MiB/s in the median run; host at {:.1} % of it",
        median.pipe_rate,
        100.0 * median.host_rate / median.pipe_rate
    );
    println!(
        "chunks:                {:>9} (average {:.1} KiB)",
        median.chunks,
        bytes as f64 / median.chunks.max(1) as f64 / 1024.0
    );
    println!(
        "CPU while streaming:   host {:.2} s user + {:.2} s system, client {:.2} s + {:.2} s",
        median.host_cpu.0, median.host_cpu.1, median.client_cpu.0, median.client_cpu.1,
    );
}

fn main() {
    support::start();
    let mib: u64 = env_number("BENCH_MIB", 512);
    let runs: usize = env_number("BENCH_RUNS", 3usize).max(1);
    let bytes = mib * 1024 * 1024;
    let host = BenchHost::start("");
    let socket = host.socket();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        println!("openwork-host bench: {mib} MiB task output over the unix socket");
        let only = std::env::var("BENCH_WORKLOADS").unwrap_or_default();
        let chosen = |w: &&Workload| {
            only.is_empty() || only.split(',').any(|word| w.name.contains(word.trim()))
        };
        for workload in WORKLOADS.iter().filter(chosen) {
            stream_workload(&host, workload, bytes, runs).await;
        }
        println!(
            "host peak RSS:         {:>9.1} MiB (over all of the above)",
            status_kib(host.pid(), "VmHWM:") as f64 / 1024.0
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        println!(
            "host RSS, idle after:  {:>9.1} MiB",
            status_kib(host.pid(), "VmRSS:") as f64 / 1024.0
        );
        pings(&socket).await;
    });
    drop(host);
}
