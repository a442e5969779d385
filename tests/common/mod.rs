//! Test harness: a real `openwork-host serve --no-mdns` on a temporary data
//! dir, clients over its unix socket, and `openwork-host stdio` processes.
//! Every wait is bounded.

#![allow(dead_code)]

pub mod process;
#[allow(unused_imports)]
pub use process::*;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use openwork_host::client::{Connection, connect_unix};
use openwork_host::protocol::{LogChunk, TaskUpdate};
use serde_json::{Value, json};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::UnixStream;

pub type Client = Connection<ReadHalf<UnixStream>, WriteHalf<UnixStream>>;

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_openwork-host")
}

/// Runs a future with a deadline; a test never hangs.
pub async fn within<T>(secs: u64, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("timed out after {secs} s"))
}

/// Takes the owner's next notification, which must be a pairing request, and
/// answers it with `verdict` (`pairing.approve` or `pairing.deny`); returns
/// the request.
pub async fn answer_next_request(owner: &mut Client, verdict: &str) -> Value {
    let requested = within(30, owner.next_notification())
        .await
        .expect("the owner's connection ended before a pairing request");
    assert_eq!(requested["method"], "pairing.requested", "{requested}");
    answer_request(owner, &requested, verdict).await;
    requested
}

/// Answers the `pairing.requested` notification `requested` with `verdict`.
pub async fn answer_request(owner: &mut Client, requested: &Value, verdict: &str) {
    let _: Value = within(
        10,
        owner.call(
            verdict,
            json!({"requestId": requested["params"]["requestId"]}),
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("{verdict}: {e}"));
}

/// Polls `check` every 20 ms until it holds or `secs` pass.
pub fn wait_until(secs: u64, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after {secs} s waiting for {what}");
}

/// A host on a temporary data dir, with its own workspace root.
pub struct TestHost {
    pub dir: tempfile::TempDir,
    pub data: PathBuf,
    pub work: PathBuf,
    child: Option<Child>,
}

impl TestHost {
    /// A data dir whose config is the workspace root plus `extra` TOML (appended).
    pub fn new(extra: &str) -> TestHost {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let work = dir.path().join("work");
        // Owner-only, as the host makes one: it keeps an existing dir's mode.
        std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
            .create(&data)
            .expect("data dir");
        std::fs::create_dir_all(&work).expect("work dir");
        let work = std::fs::canonicalize(&work).expect("canonical work dir");
        // OpenCode stays off unless a test turns it on: it is big, and may be on PATH.
        let opencode = if extra.contains("[opencode]") {
            ""
        } else {
            "[opencode]\nenabled = \"off\"\n"
        };
        // `extra` comes right after the [tasks] keys, so that bare keys in it
        // are task settings and any table it opens is its own.
        let config = format!(
            "[tasks]\nworkspace_roots = [{:?}]\nkill_grace_ms = 1000\n{extra}\n{opencode}",
            work.display().to_string()
        );
        std::fs::write(data.join("config.toml"), config).expect("config");
        TestHost {
            dir,
            data,
            work,
            child: None,
        }
    }

    /// A started host with the default test config.
    pub fn started() -> TestHost {
        let mut host = TestHost::new("");
        host.start();
        host
    }

    pub fn socket(&self) -> PathBuf {
        self.data.join("host.sock")
    }

    /// `serve` on this host's data dir as the tests run it (no mDNS, an
    /// ephemeral port), not started: for checking how it starts or refuses to.
    pub fn serve_command(&self) -> Command {
        let mut command = Command::new(bin());
        command
            .args([
                "serve",
                "--no-mdns",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(&self.data);
        command
    }

    /// Starts `serve` and waits until the socket accepts connections.
    pub fn start(&mut self) {
        let mut command = Command::new(bin());
        command.arg("--data-dir").arg(&self.data);
        self.start_with(command);
    }

    /// Starts `serve` with its log (stderr) written to the file `log`.
    pub fn start_logging_to(&mut self, log: &Path) {
        let mut command = Command::new(bin());
        command
            .arg("--data-dir")
            .arg(&self.data)
            .stderr(std::fs::File::create(log).expect("log file"));
        self.start_with(command);
    }

    /// Starts `serve` with the data dir given only by `OPENWORK_HOST_DIR`.
    pub fn start_with_env_dir(&mut self) {
        let mut command = Command::new(bin());
        command.env("OPENWORK_HOST_DIR", &self.data);
        self.start_with(command);
    }

    fn start_with(&mut self, mut command: Command) {
        let _ = std::fs::remove_file(self.socket());
        let child = command
            .args([
                "serve",
                "--no-mdns",
                "--listen",
                "127.0.0.1:0",
                "--log",
                "warn",
            ])
            .stdin(Stdio::null())
            .spawn()
            .expect("start the host");
        self.child = Some(child);
        let socket = self.socket();
        wait_until(20, "the host's socket", || {
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
        });
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL: the host gets no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits (bounded) for a graceful exit.
    pub fn terminate(&mut self) -> ExitStatus {
        self.stop(nix::sys::signal::Signal::SIGTERM)
    }

    /// Sends `sig`, then waits (bounded) for the host to exit.
    pub fn stop(&mut self, sig: nix::sys::signal::Signal) -> ExitStatus {
        signal(self.pid(), sig);
        self.wait_for_exit()
    }

    /// Waits up to 30 s for the host to exit (after a signal sent earlier).
    pub fn wait_for_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        wait_within(&mut child, 30)
    }

    pub async fn connect(&self) -> Client {
        within(10, connect_unix(&self.socket()))
            .await
            .expect("connect")
    }

    /// `openwork-host stdio` on this data dir.
    pub fn stdio(&self) -> Command {
        let mut command = Command::new(bin());
        command.arg("stdio").arg("--data-dir").arg(&self.data);
        command
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
}

/// Whether a process is alive (and not a zombie).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Pids of processes whose command line contains `marker`.
pub fn pids_with(marker: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(marker) && alive(pid) {
            pids.push(pid);
        }
    }
    pids
}

/// Starts a task and returns its id.
pub async fn run(client: &mut Client, params: Value) -> String {
    let result: Value = within(10, client.call("task.run", params))
        .await
        .expect("task.run");
    result["taskId"].as_str().expect("taskId").to_owned()
}

/// Everything a connection received for one task until its final status.
pub struct Followed {
    pub chunks: Vec<LogChunk>,
    pub updates: Vec<TaskUpdate>,
}

impl Followed {
    pub fn output(&self) -> Vec<u8> {
        self.chunks
            .iter()
            .flat_map(openwork_host::tasks::chunk::chunk_bytes)
            .collect()
    }

    pub fn stream(&self, stream: &str) -> String {
        let bytes: Vec<u8> = self
            .chunks
            .iter()
            .filter(|c| serde_json::to_value(c.stream).ok() == Some(json!(stream)))
            .flat_map(openwork_host::tasks::chunk::chunk_bytes)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    pub fn last(&self) -> &TaskUpdate {
        self.updates.last().expect("a final update")
    }
}

/// Reads notifications for `task_id` until its final `task.updated`.
pub async fn follow<R, W>(client: &mut Connection<R, W>, task_id: &str, secs: u64) -> Followed
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    within(secs, async {
        let mut followed = Followed {
            chunks: Vec::new(),
            updates: Vec::new(),
        };
        loop {
            let message = client.next_notification().await.expect("notification");
            let params = message["params"].clone();
            if params["taskId"] != task_id {
                continue;
            }
            match message["method"].as_str() {
                Some("log.chunk") => followed
                    .chunks
                    .push(serde_json::from_value(params).expect("chunk")),
                Some("task.updated") => {
                    let update: TaskUpdate = serde_json::from_value(params).expect("update");
                    let done = update.status.is_final();
                    followed.updates.push(update);
                    if done {
                        return followed;
                    }
                }
                _ => {}
            }
        }
    })
    .await
}

/// Seqs must run 1, 2, 3… with no gap and no duplicate.
/// The permission audit of `task` (`permission.audit`), oldest first.
pub async fn audit(client: &mut Client, task: &str) -> Vec<Value> {
    let audit: Value = within(10, client.call("permission.audit", json!({"taskId": task})))
        .await
        .unwrap();
    let mut entries = audit["entries"].as_array().unwrap().clone();
    entries.reverse();
    entries
}

/// Answers a permission request with `decision` (`permission.reply`), waiting
/// at most 10 s; the host's answer or its error.
pub async fn reply<R, W>(
    client: &mut Connection<R, W>,
    request_id: impl serde::Serialize,
    decision: &str,
) -> Result<Value, openwork_host::client::ClientError>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let params = json!({"requestId": request_id, "decision": decision});
    within(10, client.call("permission.reply", params)).await
}

pub fn assert_contiguous(chunks: &[LogChunk], from: u64) {
    for (i, chunk) in chunks.iter().enumerate() {
        assert_eq!(
            chunk.seq,
            from + i as u64,
            "seq gap or duplicate at index {i}"
        );
    }
}

/// The JSON bodies of LSP frames (`Content-Length` headers only), as a
/// strict reader would take them.
pub fn lsp_frames(mut bytes: &[u8]) -> Vec<Value> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        let end = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a header");
        let header = std::str::from_utf8(&bytes[..end]).expect("an ASCII header");
        let length: usize = header
            .strip_prefix("Content-Length: ")
            .expect("only Content-Length")
            .parse()
            .expect("a length");
        let body = &bytes[end + 4..end + 4 + length];
        frames.push(serde_json::from_slice(body).expect("every body is JSON"));
        bytes = &bytes[end + 4 + length..];
    }
    frames
}

/// The JSON messages of newline-delimited output.
pub fn json_lines(bytes: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// Writes a file and returns its path (for scripts used as tasks).
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, body).expect("script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// Local (owner) helpers and device sessions over TLS.
impl TestHost {
    /// The TLS listener's `ip:port`, as `health.get` reports it.
    pub async fn tls_address(&self) -> String {
        let mut local = self.connect().await;
        let health: Value = within(10, local.call("health.get", json!({})))
            .await
            .expect("health");
        health["listeners"]
            .as_array()
            .and_then(|l| l.iter().find(|l| l["transport"] == "tls"))
            .and_then(|l| l["address"].as_str())
            .expect("a TLS listener")
            .to_owned()
    }

    /// Pairs a device through the library, approving from a local connection.
    pub async fn pair_device(
        &self,
        name: &str,
        scopes: Option<Vec<openwork_host::auth::Scope>>,
    ) -> openwork_host::client::KnownHost {
        self.pair(name, scopes, json!({"ttlS": 120})).await
    }

    /// Like `pair_device`, with `pairing.open` params of the test's choosing.
    pub async fn pair_device_with_window(
        &self,
        name: &str,
        window: Value,
    ) -> openwork_host::client::KnownHost {
        self.pair(name, None, window).await
    }

    async fn pair(
        &self,
        name: &str,
        scopes: Option<Vec<openwork_host::auth::Scope>>,
        window: Value,
    ) -> openwork_host::client::KnownHost {
        let mut owner = self.connect().await;
        let window: Value = within(10, owner.call("pairing.open", window))
            .await
            .expect("pairing.open");
        let request = openwork_host::client::pair::PairRequest {
            address: self.tls_address().await,
            code: window["code"].as_str().unwrap().to_owned(),
            device_name: name.to_owned(),
            scopes,
            expected_fingerprint: Some(window["fingerprint"].as_str().unwrap().to_owned()),
            approval_timeout: Duration::from_secs(30),
        };
        let pairing =
            tokio::spawn(async move { openwork_host::client::pair::pair(&request).await });
        answer_next_request(&mut owner, "pairing.approve").await;
        within(10, pairing).await.expect("join").expect("paired")
    }
}

pub type Device = openwork_host::client::TlsConnection;

/// An authenticated session for a paired device.
pub async fn device_session(host: &openwork_host::client::KnownHost) -> Device {
    within(10, openwork_host::client::open_session(host, "test"))
        .await
        .expect("device session")
}

/// A process's resident memory in KiB (`VmRSS` in /proc/PID/status).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}
