//! What the benchmarks share: a real host on a temporary data dir, a paired
//! device for TLS, and small measuring helpers. Benchmarks print figures;
//! they assert only that the work was done, never how fast.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use openwork_host::client::pair::{PairRequest, pair};
use openwork_host::client::{KnownHost, connect_unix};
use serde_json::{Value, json};

/// A `serve --no-mdns` host on a temporary data dir, stopped on drop.
pub struct BenchHost {
    pub dir: tempfile::TempDir,
    pub data: PathBuf,
    pub work: PathBuf,
    child: std::process::Child,
}

impl BenchHost {
    /// Starts a host whose workspace root is a fresh dir, with `extra` TOML
    /// appended to its config, listening for TLS on a free loopback port.
    pub fn start(extra: &str) -> BenchHost {
        let dir = tempfile::tempdir().expect("tempdir");
        let (data, work) = (dir.path().join("data"), dir.path().join("work"));
        std::fs::create_dir_all(&data).expect("data dir");
        std::fs::create_dir_all(&work).expect("work dir");
        std::fs::write(
            data.join("config.toml"),
            format!(
                "[tasks]\nworkspace_roots = [{:?}]\n{extra}",
                work.display().to_string()
            ),
        )
        .expect("config");
        BenchHost::start_in(dir, data, work)
    }

    /// Starts a host on a data dir prepared by the caller.
    pub fn start_in(dir: tempfile::TempDir, data: PathBuf, work: PathBuf) -> BenchHost {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_openwork-host"))
            .args([
                "serve",
                "--no-mdns",
                "--listen",
                "127.0.0.1:0",
                "--log",
                "warn",
                "--data-dir",
            ])
            .arg(&data)
            .spawn()
            .expect("start the host");
        let host = BenchHost {
            dir,
            data,
            work,
            child,
        };
        // The local socket opens last, once every listener is up.
        for _ in 0..800 {
            if std::os::unix::net::UnixStream::connect(host.socket()).is_ok() {
                return host;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("the host did not start within 20 s");
    }

    pub fn socket(&self) -> PathBuf {
        self.data.join("host.sock")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The bound TLS address, from `health.get`.
    pub async fn tls_address(&self) -> String {
        let mut owner = connect_unix(&self.socket()).await.expect("owner");
        let health: Value = owner.call("health.get", json!({})).await.expect("health");
        health["listeners"]
            .as_array()
            .and_then(|l| l.iter().find(|l| l["transport"] == "tls"))
            .and_then(|l| l["address"].as_str())
            .expect("a TLS listener")
            .to_owned()
    }

    /// Pairs a device over TLS, approving it as the owner.
    pub async fn pair_device(&self) -> KnownHost {
        pair_device(&self.socket(), &self.tls_address().await).await
    }
}

impl Drop for BenchHost {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

/// Pairs a device with the host behind `socket` over its TLS port `tls`.
pub async fn pair_device(socket: &Path, tls: &str) -> KnownHost {
    let mut owner = connect_unix(socket).await.expect("owner");
    let window: Value = owner
        .call("pairing.open", json!({"ttlS": 60}))
        .await
        .expect("window");
    let request = PairRequest {
        address: tls.to_owned(),
        code: window["code"].as_str().expect("code").to_owned(),
        device_name: "bench".into(),
        scopes: None,
        expected_fingerprint: Some(window["fingerprint"].as_str().expect("fp").to_owned()),
        approval_timeout: Duration::from_secs(30),
    };
    let pairing = tokio::spawn(async move { pair(&request).await });
    approve_next(&mut owner).await;
    pairing.await.expect("join").expect("paired")
}

/// The owner, on the host's local socket (`connect_unix`).
pub type Owner = openwork_host::client::Connection<
    tokio::io::ReadHalf<tokio::net::UnixStream>,
    tokio::io::WriteHalf<tokio::net::UnixStream>,
>;

/// Approves the next device that asks to pair, as the owner.
pub async fn approve_next(owner: &mut Owner) {
    let requested = owner.next_notification().await.expect("request");
    let _: Value = owner
        .call(
            "pairing.approve",
            json!({"requestId": requested["params"]["requestId"]}),
        )
        .await
        .expect("approve");
}

/// A `/proc/PID/status` figure in KiB (`VmRSS:`, `VmHWM:`).
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The `p` quantile (0..=1) of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// CPU seconds (user, system) a process has used so far, from `/proc/PID/stat`.
pub fn cpu_seconds(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) / hz, ticks(12) / hz)
}

/// The line the default benchmark task repeats.
pub const LINE: &[u8] =
    b"openwork benchmark line: the quick brown fox jumps over the lazy dog 0123456789\n";

/// Set in a benchmark binary's environment to make it the task instead: it
/// writes this many bytes of `LINE` repeated to stdout and exits.
const EMIT_VAR: &str = "OPENWORK_BENCH_EMIT";

/// The benchmarks' default task: one process writing `{bytes}` of one line
/// repeated to its stdout, 64 KiB per write (this benchmark binary run again,
/// so that no second process such as `head` copies the bytes on the way).
pub fn repeated_line_command(bytes: u64) -> String {
    let exe = std::env::current_exe().expect("the benchmark's own path");
    format!("{EMIT_VAR}={bytes} exec '{}'", exe.display())
}

/// Call first in a benchmark's `main`: when started as the benchmark task,
/// writes the output asked for and exits; otherwise sets the allocator up as
/// the `openwork-host` binary does (the benchmark is the client side).
pub fn start() {
    emit_if_asked();
    openwork_host::alloc::keep_freed_memory();
}

/// A number from the environment variable `name`, or `default`.
pub fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// When started as a benchmark task, writes the output asked for and exits.
fn emit_if_asked() {
    let Some(bytes) = std::env::var(EMIT_VAR)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return;
    };
    use std::io::Write;
    let block: Vec<u8> = LINE.iter().copied().cycle().take(64 * 1024).collect();
    let mut out = std::io::stdout().lock();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        if out.write_all(&block[..n]).is_err() {
            std::process::exit(1);
        }
        left -= n as u64;
    }
    let _ = out.flush();
    std::process::exit(0);
}

#[derive(serde::Deserialize)]
struct Note<'a> {
    #[serde(borrow)]
    method: Option<&'a str>,
    #[serde(borrow)]
    params: Option<NoteParams<'a>>,
}

#[derive(serde::Deserialize)]
struct NoteParams<'a> {
    /// Borrowed when it needs no unescaping, owned otherwise: the client
    /// decodes every byte either way.
    #[serde(borrow)]
    data: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    status: Option<&'a str>,
}

/// Reads a subscribed task's notifications until it succeeds; returns the
/// output bytes and the number of `log.chunk`s. Panics if the task fails.
pub async fn receive_output<R, W>(conn: &mut openwork_host::client::Connection<R, W>) -> (u64, u64)
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let (mut total, mut chunks) = (0u64, 0u64);
    loop {
        let body = conn.read_frame().await.expect("frame");
        // As the client library reads them (`client run`, `client logs --follow`).
        if let Some(chunk) = openwork_host::client::decode_log_chunk(&body) {
            total += chunk.data.len() as u64;
            chunks += 1;
            continue;
        }
        let note: Note = serde_json::from_slice(&body).expect("json");
        match (note.method, note.params) {
            (Some("log.chunk"), Some(p)) => {
                total += p.data.map_or(0, |d| d.len() as u64);
                chunks += 1;
            }
            (Some("task.updated"), Some(p)) if p.status == Some("succeeded") => {
                return (total, chunks);
            }
            (Some("task.updated"), Some(p)) if p.status != Some("running") => {
                panic!("task ended as {:?}", p.status)
            }
            _ => {}
        }
    }
}
