//! Network benchmarks over TLS on loopback, printed as figures:
//! - `$/ping` per second, sequential and pipelined on 8 connections;
//! - connect + TLS + `initialize` latency, p50 and p99;
//! - a 512 MiB task output streamed to a device, next to plain tokio-rustls
//!   transfers of the same bytes in the same run: the task's output relayed
//!   straight from its pipe, and the bytes sent from memory (`BENCH_ROUNDS`
//!   rounds of the three, 5 by default);
//! - host RSS with 1,000 idle authenticated connections.
//!
//! Run: `cargo bench --bench tls` (`BENCH_MIB`, `BENCH_IDLE` change the sizes;
//! to profile with `perf`, `BENCH_HOST_STREAMS=N` only streams N times
//! through the host and `BENCH_RELAY_STREAMS=N` N times through the plain
//! relay, printing each run's rate and CPU).

use std::sync::Arc;
use std::time::{Duration, Instant};

use openwork_host::client::{KnownHost, connect_unix, open_session};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod support;
use support::{
    BenchHost, LINE, cpu_seconds, env_number, percentile, receive_output, repeated_line_command,
    status_kib,
};

/// Where a plain TLS transfer takes its bytes from.
#[derive(Clone, Copy)]
enum Source {
    /// A 64 KiB block in memory, sent again and again: TLS alone.
    Memory,
    /// The benchmark task run as a child, its stdout relayed as it comes:
    /// everything the host does but storing and framing.
    TaskPipe,
}

/// The same bytes over a bare tokio-rustls connection.
async fn plain_tls_transfer(bytes: u64, source: Source) -> Duration {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["openwork-host".into()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("addr");
    let sender = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut tls = acceptor.accept(tcp).await.expect("handshake");
        let mut buf: Vec<u8> = LINE.iter().copied().cycle().take(64 * 1024).collect();
        match source {
            Source::Memory => {
                let mut left = bytes;
                while left > 0 {
                    let n = left.min(buf.len() as u64) as usize;
                    tls.write_all(&buf[..n]).await.expect("write");
                    left -= n as u64;
                }
            }
            Source::TaskPipe => {
                let mut child = tokio::process::Command::new("/bin/sh")
                    .arg("-c")
                    .arg(repeated_line_command(bytes))
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .expect("spawn the task");
                let mut out = child.stdout.take().expect("stdout");
                loop {
                    let n = out.read(&mut buf).await.expect("read");
                    if n == 0 {
                        break;
                    }
                    tls.write_all(&buf[..n]).await.expect("write");
                }
                child.wait().await.expect("wait");
            }
        }
        tls.shutdown().await.expect("close");
    });
    let verifier = openwork_host::transport::tls::PinnedCert::new(None);
    let config = openwork_host::transport::tls::client_config(verifier).expect("client config");
    let start = Instant::now();
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(openwork_host::transport::tls::server_name(), tcp)
        .await
        .expect("client handshake");
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    while got < bytes {
        let n = tls.read(&mut buf).await.expect("read");
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    sender.await.expect("sender");
    assert_eq!(got, bytes);
    start.elapsed()
}

/// CPU seconds (user + system) process `pid` has used so far.
fn cpu_total(pid: u32) -> f64 {
    let (user, system) = cpu_seconds(pid);
    user + system
}

/// One stream of the task's output through the host to a device.
struct Streamed {
    time: Duration,
    host_cpu: f64,
    device_cpu: f64,
}

/// Runs the task on `host_pid`'s host and reads all its output as `device`;
/// checks that every byte arrived.
async fn streamed(
    device: &KnownHost,
    host_pid: u32,
    bytes: u64,
    cwd: &std::path::Path,
) -> Streamed {
    let own = std::process::id();
    let (host0, device0) = (cpu_total(host_pid), cpu_total(own));
    let mut conn = open_session(device, "bench").await.expect("session");
    let command = repeated_line_command(bytes);
    let start = Instant::now();
    let _: Value = conn
        .call("task.run", json!({"command": command, "cwd": cwd}))
        .await
        .expect("task.run");
    let (total, _) = receive_output(&mut conn).await;
    let time = start.elapsed();
    assert_eq!(total, bytes, "the device saw every byte");
    Streamed {
        time,
        host_cpu: cpu_total(host_pid) - host0,
        device_cpu: cpu_total(own) - device0,
    }
}

fn main() {
    support::start();
    let mib: u64 = env_number("BENCH_MIB", 512);
    let idle: usize = env_number("BENCH_IDLE", 1000);
    let host = BenchHost::start("");
    let (socket, work) = (host.socket(), host.work.clone());
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut owner = connect_unix(&socket).await.expect("owner");
        let tls = host.tls_address().await;
        let device = host.pair_device().await;
        println!("openwork-host TLS bench (loopback, {tls})");

        let bytes = mib * 1024 * 1024;
        let rate = |t: Duration| bytes as f64 / (1024.0 * 1024.0) / t.as_secs_f64();
        // Profiling modes: only streams, each run's rate and CPU printed.
        let relay_only: u32 = env_number("BENCH_RELAY_STREAMS", 0);
        if relay_only > 0 {
            for _ in 0..relay_only {
                let own = std::process::id();
                let c0 = cpu_total(own);
                let r = rate(plain_tls_transfer(bytes, Source::TaskPipe).await);
                println!("plain tokio-rustls, relayed: {r:>9.1} MiB/s, CPU both ends {:.2} s", cpu_total(own) - c0);
            }
            return;
        }
        let host_only: u32 = env_number("BENCH_HOST_STREAMS", 0);
        if host_only > 0 {
            for _ in 0..host_only {
                let s = streamed(&device, host.pid(), bytes, &work).await;
                println!(
                    "task output via host (TLS):  {:>9.1} MiB/s, CPU host {:.2} s, device {:.2} s",
                    rate(s.time),
                    s.host_cpu,
                    s.device_cpu
                );
            }
            return;
        }

        // Pings.
        let mut conn = open_session(&device, "bench").await.expect("session");
        let n = 20_000;
        let start = Instant::now();
        for _ in 0..n {
            let _: Value = conn.call("$/ping", json!({})).await.expect("ping");
        }
        println!("ping, sequential:            {:>9.0} calls/s", n as f64 / start.elapsed().as_secs_f64());
        let per_conn = 25_000u64;
        let start = Instant::now();
        let mut workers = Vec::new();
        for _ in 0..8 {
            let device = device.clone();
            workers.push(tokio::spawn(async move {
                let mut conn = open_session(&device, "bench").await.expect("session");
                let (mut sent, mut received) = (0u64, 0u64);
                while sent < 32 {
                    sent += 1;
                    conn.send(&json!({"jsonrpc": "2.0", "id": sent, "method": "$/ping"})).await.expect("send");
                }
                while received < per_conn {
                    conn.read_frame().await.expect("reply");
                    received += 1;
                    if sent < per_conn {
                        sent += 1;
                        conn.send(&json!({"jsonrpc": "2.0", "id": sent, "method": "$/ping"})).await.expect("send");
                    }
                }
            }));
        }
        for w in workers {
            w.await.expect("worker");
        }
        println!(
            "ping, 8 connections x 32:   {:>9.0} calls/s",
            (8 * per_conn) as f64 / start.elapsed().as_secs_f64()
        );

        // Connect + TLS + initialize.
        let mut latencies = Vec::new();
        for _ in 0..300 {
            let start = Instant::now();
            let conn = open_session(&device, "bench").await.expect("session");
            latencies.push(start.elapsed());
            drop(conn);
        }
        latencies.sort();
        println!(
            "connect+TLS+initialize:      p50 {:.2} ms, p99 {:.2} ms ({} connections)",
            percentile(&latencies, 0.50).as_secs_f64() * 1000.0,
            percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
            latencies.len()
        );

        // Idle connections, before streaming leaves freed heap behind for
        // them to reuse (which would hide what they cost).
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = status_kib(host.pid(), "VmRSS:");
        let mut idle_conns = Vec::with_capacity(idle);
        for _ in 0..idle {
            idle_conns.push(open_session(&device, "idle").await.expect("idle session"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = status_kib(host.pid(), "VmRSS:");
        let metrics: Value = owner.call("metrics.get", json!({})).await.expect("metrics");
        println!(
            "{idle} idle authenticated connections: host RSS {:.1} -> {:.1} MiB, {:.1} KiB each ({} open)",
            before as f64 / 1024.0,
            after as f64 / 1024.0,
            after.saturating_sub(before) as f64 / idle as f64,
            metrics["connections"]["active"]
        );
        drop(idle_conns);
        tokio::time::sleep(Duration::from_millis(500)).await;

        // Streaming: rounds of the three transfers, medians shown.
        let (mut memory, mut relay, mut via_host, mut cpu) = (vec![], vec![], vec![], vec![]);
        let mut plain_cpu = vec![];
        let rounds: usize = env_number("BENCH_ROUNDS", 5);
        for _ in 0..rounds {
            let own = std::process::id();
            let c0 = cpu_total(own);
            memory.push(rate(plain_tls_transfer(bytes, Source::Memory).await));
            let c1 = cpu_total(own);
            relay.push(rate(plain_tls_transfer(bytes, Source::TaskPipe).await));
            plain_cpu.push((c1 - c0, cpu_total(own) - c1));
            let s = streamed(&device, host.pid(), bytes, &work).await;
            via_host.push(rate(s.time));
            cpu.push((rate(s.time), s.host_cpu, s.device_cpu));
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let runs = |v: &[f64]| v.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", ");
        // Each round's transfers run back to back, so a round's ratio is
        // least moved by this machine's speed drifting between rounds.
        let ratios = |plain: &[f64]| -> Vec<f64> {
            via_host.iter().zip(plain).map(|(h, p)| 100.0 * h / p).collect()
        };
        let (of_relay, of_memory) = (ratios(&relay), ratios(&memory));
        let (memory_m, relay_m, host_m) = (median(&mut memory), median(&mut relay), median(&mut via_host));
        println!("plain tokio-rustls, memory:  {memory_m:>9.1} MiB/s median ({mib} MiB; {})", runs(&memory));
        println!("plain tokio-rustls, relayed: {relay_m:>9.1} MiB/s median (the task's pipe to TLS; {})", runs(&relay));
        println!("task output via host (TLS):  {host_m:>9.1} MiB/s median ({})", runs(&via_host));
        cpu.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (_, host_cpu, device_cpu) = cpu[cpu.len() / 2];
        println!("CPU while streaming:         host {host_cpu:.2} s, device {device_cpu:.2} s (median run)");
        plain_cpu.sort_by(|a, b| (a.0 + a.1).total_cmp(&(b.0 + b.1)));
        let (memory_cpu, relay_cpu) = plain_cpu[plain_cpu.len() / 2];
        println!(
            "CPU of the plain transfers:  both ends {memory_cpu:.2} s from memory, {relay_cpu:.2} s relayed (task not counted)"
        );
        println!(
            "host / plain TLS:            {:>9.1} % of the relay, {:.1} % of memory (medians)",
            100.0 * host_m / relay_m,
            100.0 * host_m / memory_m
        );
        println!(
            "  each round's ratio:        {:>9.1} % of the relay median ({} %), {:.1} % of memory ({} %)",
            median(&mut of_relay.clone()),
            runs(&of_relay),
            median(&mut of_memory.clone()),
            runs(&of_memory),
        );
        // What reading the task's pipe costs before the host does anything:
        // the ceiling of any host's stream against the transfer from memory.
        println!(
            "plain relay / memory:        {:>9.1} % (medians)",
            100.0 * relay_m / memory_m
        );
    });
    drop(host);
}
