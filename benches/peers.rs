//! The host next to what a person would use instead, on loopback, in one run:
//! - first output line of `echo hello`: `ssh` (key auth, fresh connection),
//!   `openwork-host client run` (paired), and the library on an open session;
//! - throughput of a task printing 256 MiB: ssh vs the host over TLS;
//! - a 10 s network cut mid-stream (the soak's network path: live
//!   connections closed and the link down for 10 s; for mosh, whose data
//!   path is UDP, a UDP relay that drops every datagram for 10 s): when
//!   output flows again after the network's return, and how many lines were
//!   lost (for mosh: never on its screen, as it sends the screen and not the
//!   scrollback);
//! - client CPU per hour of an idle connected device: ssh with
//!   `ServerAliveInterval=15`, mosh, and the host's client (`client run`
//!   waiting on a quiet task; it pings after 15 s of silence).
//!
//! Installs `openssh-server` and `mosh` from Debian's packages when missing.
//! sshd runs on a loopback port of its own with its own host key, config
//! and authorized key in a temp dir. Run: `cargo bench --bench peers`
//! (`PEERS_MIB`, `PEERS_ROUNDS`, `PEERS_IDLE_S` change the sizes). Prints
//! figures; asserts only that the work was done.

#[path = "../src/bin/openwork-soak/path.rs"]
#[allow(dead_code)]
mod path;
mod support;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use openwork_host::client::{HostSession, KnownHost, KnownHosts, Notice, ReconnectPolicy};
use openwork_host::protocol::TaskRunParams;
use path::NetPath;
use support::{BenchHost, cpu_seconds, env_number, percentile, repeated_line_command};

const SSHD: &str = "/usr/sbin/sshd";

fn ensure_packages() {
    if Path::new(SSHD).exists() && Path::new("/usr/bin/mosh").exists() {
        return;
    }
    eprintln!("installing openssh-server and mosh from Debian's packages");
    let _ = Command::new("apt-get").arg("update").status();
    let status = Command::new("apt-get")
        .args([
            "install",
            "-y",
            "--no-install-recommends",
            "openssh-server",
            "openssh-client",
            "mosh",
        ])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .expect("apt-get");
    assert!(status.success(), "apt-get install failed");
}

/// sshd on a loopback port of its own, stopped on drop.
struct Sshd {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Sshd {
    fn start() -> Sshd {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        for key in ["host_key", "client_key"] {
            let status = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(d.join(key))
                .status()
                .expect("ssh-keygen");
            assert!(status.success());
        }
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).expect("key");
        let port = free_port();
        std::fs::write(
            d.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPermitRootLogin yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile none\nAcceptEnv LANG LC_*\n",
                d.join("host_key").display(),
                d.join("authorized_keys").display()
            ),
        )
        .expect("sshd_config");
        let _ = std::fs::create_dir_all("/run/sshd");
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stderr(Stdio::null())
            .spawn()
            .expect("sshd");
        for _ in 0..400 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Sshd { dir, port, child }
    }

    /// `ssh` to `port` (sshd's, or a path in front of it) with the options given.
    fn ssh(&self, port: u16, extra: &[&str], command: &str) -> Command {
        let mut ssh = Command::new("ssh");
        ssh.arg("-i")
            .arg(self.dir.path().join("client_key"))
            .args(["-p", &port.to_string()])
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "LogLevel=ERROR",
            ])
            .args(extra)
            .arg("root@127.0.0.1")
            .arg(command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        ssh
    }
}

/// Time from spawning `command` to its first line on stdout.
fn first_line(mut command: Command) -> Duration {
    let started = Instant::now();
    let mut child = command.spawn().expect("spawn");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("a line");
    let took = started.elapsed();
    assert_eq!(line.trim(), "hello");
    let _ = child.wait();
    took
}

fn host_cli(client_dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_openwork-host"));
    command
        .args(["client", "--client-dir"])
        .arg(client_dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    command
}

fn summary(mut times: Vec<Duration>) -> String {
    times.sort();
    format!(
        "p50 {:>7.1} ms  p90 {:>7.1} ms",
        support::ms(percentile(&times, 0.5)),
        support::ms(percentile(&times, 0.9))
    )
}

/// A line every 10 ms for 25 s, numbered.
const STREAM: &str = "i=1; while [ $i -le 2500 ]; do echo $i; i=$((i+1)); sleep 0.01; done";
const STREAM_LINES: u64 = 2500;

/// What a cut did to a stream: when lines flowed again after the network's
/// return, and how many never arrived.
struct CutOutcome {
    resumed_after: Option<Duration>,
    lost: u64,
    duplicated: u64,
}

impl CutOutcome {
    /// From the numbered lines received (when, which) and the network's return.
    fn of(lines: &[(Instant, u64)], back: Instant) -> CutOutcome {
        let mut seen = std::collections::HashSet::new();
        let mut duplicated = 0;
        for (_, l) in lines {
            if !seen.insert(*l) {
                duplicated += 1;
            }
        }
        CutOutcome {
            resumed_after: lines
                .iter()
                .find(|(at, _)| *at >= back)
                .map(|(at, _)| *at - back),
            lost: (1..=STREAM_LINES).filter(|l| !seen.contains(l)).count() as u64,
            duplicated,
        }
    }
}

/// Cuts `path` (live connections closed, link down) 3 s in, for 10 s.
async fn cut_for_ten_seconds(path: &NetPath) -> Instant {
    tokio::time::sleep(Duration::from_secs(3)).await;
    path.update(|s| {
        s.cut += 1;
        s.up = false;
    });
    tokio::time::sleep(Duration::from_secs(10)).await;
    path.update(|s| s.up = true);
    Instant::now()
}

async fn ssh_cut(sshd: &Sshd) -> CutOutcome {
    let path = NetPath::start(format!("127.0.0.1:{}", sshd.port).parse().expect("addr"))
        .await
        .expect("path");
    let port: u16 = path
        .address
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let mut child = sshd
        .ssh(port, &["-o", "ServerAliveInterval=15"], STREAM)
        .spawn()
        .expect("ssh");
    let stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            lines.push((Instant::now(), line.trim().parse::<u64>().unwrap_or(0)));
        }
        lines
    });
    let back = cut_for_ten_seconds(&path).await;
    let lines = tokio::task::spawn_blocking(move || reader.join().expect("reader"))
        .await
        .expect("join");
    let _ = child.kill();
    let _ = child.wait();
    CutOutcome::of(&lines, back)
}

async fn host_cut(device: &KnownHost) -> CutOutcome {
    let upstream = device.address.parse().expect("addr");
    let path = NetPath::start(upstream).await.expect("path");
    let via = KnownHost {
        address: path.address.clone(),
        ..device.clone()
    };
    // The library's defaults, as `client run` uses them.
    let mut session = open_session(&via).await;
    let started = session
        .run_task(TaskRunParams {
            command: Some(STREAM.into()),
            ..TaskRunParams::default()
        })
        .await
        .expect("task.run");
    let cut = tokio::spawn(async move {
        let back = cut_for_ten_seconds(&path).await;
        (back, path)
    });
    let mut lines: Vec<(Instant, u64)> = Vec::new();
    let mut text = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(120), session.next_notice()).await {
            Ok(Ok(Notice::Chunk(chunk))) if chunk.task_id == started.task_id => {
                text.extend(openwork_host::tasks::chunk::chunk_bytes(&chunk));
                while let Some(end) = text.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = text.drain(..=end).collect();
                    let n = String::from_utf8_lossy(&line).trim().parse().unwrap_or(0);
                    lines.push((Instant::now(), n));
                }
            }
            Ok(Ok(Notice::Updated(u))) if u.task_id == started.task_id && u.status.is_final() => {
                break;
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("the session ended: {e}"),
            Err(_) => panic!("no notice for 120 s"),
        }
    }
    let (back, _path) = cut.await.expect("cut");
    CutOutcome::of(&lines, back)
}

/// The stream for mosh: the same lines, each `n<i>.` so that a line can be
/// told from the screen updates around it; it waits for the client first.
const MOSH_STREAM: &str =
    "sleep 3; i=1; while [ $i -le 2500 ]; do echo n$i.; i=$((i+1)); sleep 0.01; done; sleep 2";

/// A UDP relay on loopback in front of mosh-server (mosh's data path is
/// UDP): forwards datagrams both ways while `up`, drops every one while not
/// (a network gone), until `stop`.
async fn udp_relay(
    server: std::net::SocketAddr,
    up: tokio::sync::watch::Receiver<bool>,
    stop: tokio_util::sync::CancellationToken,
) -> u16 {
    let front = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let back = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    back.connect(server).await.expect("connect");
    let port = front.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let mut client = None;
        let mut from_client = vec![0u8; 65536];
        let mut from_server = vec![0u8; 65536];
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                got = front.recv_from(&mut from_client) => {
                    let Ok((n, peer)) = got else { continue };
                    client = Some(peer);
                    let up_now = *up.borrow();
                    if up_now {
                        let _ = back.send(&from_client[..n]).await;
                    }
                }
                got = back.recv(&mut from_server) => {
                    let Ok(n) = got else { continue };
                    let up_now = *up.borrow();
                    if let (Some(peer), true) = (client, up_now) {
                        let _ = front.send_to(&from_server[..n], peer).await;
                    }
                }
            }
        }
    });
    port
}

/// Terminal output without its escape sequences (CSI, OSC and two-byte ones).
fn strip_escapes(raw: &[u8]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            0x1b if raw.get(i + 1) == Some(&b'[') => {
                i += 2;
                while i < raw.len() && !(0x40..=0x7e).contains(&raw[i]) {
                    i += 1;
                }
                i += 1;
            }
            0x1b if raw.get(i + 1) == Some(&b']') => {
                i += 2;
                while i < raw.len() && raw[i] != 0x07 && raw[i] != 0x1b {
                    i += 1;
                }
                i += 1;
            }
            0x1b => i += 2,
            b => {
                out.push(b as char);
                i += 1;
            }
        }
    }
    out
}

/// The numbers of the whole `n<i>.` lines in a screen's text, in order.
fn mosh_lines(text: &str) -> Vec<u64> {
    text.split('n')
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            (!digits.is_empty() && rest[digits.len()..].starts_with('.'))
                .then(|| digits.parse().ok())
                .flatten()
        })
        .collect()
}

/// mosh after a 10 s cut of its UDP path mid-stream: `mosh-server` started
/// directly on loopback (what `mosh` starts over ssh), `mosh-client` in a
/// pseudo-terminal through the relay. Output flowing again is the first
/// screen update with a line of the stream after the network's return;
/// lost lines are those never drawn on the client's screen (mosh sends the
/// screen, not the scrollback).
async fn mosh_cut() -> Result<(CutOutcome, u64), String> {
    let (port, key) = mosh_server(MOSH_STREAM)?;
    let (up_tx, up) = tokio::sync::watch::channel(true);
    let stop = tokio_util::sync::CancellationToken::new();
    let relay = udp_relay(
        format!("127.0.0.1:{port}").parse().expect("addr"),
        up,
        stop.clone(),
    )
    .await;
    let mut client = mosh_client(relay, &key)?;
    let mut stdout = client.stdout.take().expect("stdout");
    // (when, the line numbers new in that read): every read re-parses the
    // whole screen output so far, as a line may arrive in two reads.
    let reader = std::thread::spawn(move || {
        let mut raw = Vec::new();
        let mut known = 0;
        let mut lines: Vec<(Instant, u64)> = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let deadline = Instant::now() + Duration::from_secs(90);
        while Instant::now() < deadline {
            let Ok(n) = stdout.read(&mut buf) else { break };
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
            let all = mosh_lines(&strip_escapes(&raw));
            let now = Instant::now();
            lines.extend(all[known.min(all.len())..].iter().map(|l| (now, *l)));
            known = all.len();
        }
        lines
    });
    // The stream starts 3 s after the server; the cut 3 s into it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = up_tx.send(false);
    let cut_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let _ = up_tx.send(true);
    let back = Instant::now();
    // The stream ends 25 s after it began (12 s from now); then the client
    // is stopped, which ends the reader (bounded either way).
    tokio::time::sleep(Duration::from_secs(20)).await;
    let _ = client.kill();
    let _ = client.wait();
    let lines = tokio::task::spawn_blocking(move || reader.join().expect("reader"))
        .await
        .expect("join");
    stop.cancel();
    // The lines printed while the network was gone: from just after the last
    // one on screen before the cut to the newest on the first screen after it.
    let before = lines
        .iter()
        .filter(|(at, _)| *at < cut_at)
        .map(|(_, l)| *l)
        .max()
        .unwrap_or(0);
    let first_after = lines.iter().find(|(at, _)| *at >= back).map(|(at, _)| *at);
    let upto = lines
        .iter()
        .filter(|(at, _)| Some(*at) == first_after)
        .map(|(_, l)| *l)
        .max()
        .unwrap_or(before);
    let shown: std::collections::HashSet<u64> = lines.iter().map(|(_, l)| *l).collect();
    let over_cut = (before + 1..=upto).filter(|l| !shown.contains(l)).count() as u64;
    Ok((CutOutcome::of(&lines, back), over_cut))
}

/// `mosh-server new` on a free UDP port of loopback running `command` (what
/// `mosh` starts over ssh); its port and session key.
fn mosh_server(command: &str) -> Result<(u16, String), String> {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let started = Command::new("mosh-server")
        .args([
            "new",
            "-s",
            "-c",
            "8",
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .args(["-l", "LANG=C.UTF-8", "--", "sh", "-c", command])
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("mosh-server: {e}"))?;
    let said = String::from_utf8_lossy(&started.stdout).into_owned();
    let key = said
        .lines()
        .find_map(|l| l.trim().strip_prefix("MOSH CONNECT "))
        .and_then(|rest| rest.split_whitespace().nth(1))
        .ok_or_else(|| format!("mosh-server did not start: {said:?}"))?
        .to_owned();
    Ok((port, key))
}

/// `mosh-client` to a UDP `port` on loopback, in a pseudo-terminal of 80×24
/// (`script`; mosh-client refuses a terminal without a size); its screen
/// output on stdout.
fn mosh_client(port: u16, key: &str) -> Result<Child, String> {
    Command::new("script")
        .arg("-qfc")
        .arg(format!(
            "stty rows 24 cols 80; exec mosh-client 127.0.0.1 {port}"
        ))
        .arg("/dev/null")
        .env("MOSH_KEY", key)
        .env("LANG", "C.UTF-8")
        .env("TERM", "xterm")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("script: {e}"))
}

/// A session with the host on an open connection, the library's defaults.
async fn open_session(device: &KnownHost) -> HostSession {
    HostSession::open(device.clone(), "peers-bench", ReconnectPolicy::default())
        .await
        .expect("session")
}

/// Runs a task and hands each of its chunks' bytes to `on_output`, until its final status.
async fn run_to_end(
    session: &mut HostSession,
    params: TaskRunParams,
    mut on_output: impl FnMut(&[u8]),
) {
    let task = session.run_task(params).await.expect("task.run");
    loop {
        match session.next_notice().await.expect("notice") {
            Notice::Chunk(c) if c.task_id == task.task_id => on_output(c.data.as_bytes()),
            Notice::Updated(u) if u.task_id == task.task_id && u.status.is_final() => return,
            _ => {}
        }
    }
}

/// Sends SIGTERM to `pid`.
fn terminate(pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
}

fn cpu(pid: u32) -> f64 {
    let (user, system) = cpu_seconds(pid);
    user + system
}

/// The pids of the processes named `name`.
fn pids_named(name: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if std::fs::read_to_string(entry.path().join("comm")).is_ok_and(|c| c.trim() == name) {
            found.push(pid);
        }
    }
    found
}

/// The pid of the newest `mosh-client` process, if any.
fn mosh_client_pid() -> Option<u32> {
    pids_named("mosh-client").into_iter().max()
}

fn main() {
    support::start();
    ensure_packages();
    let rounds: usize = env_number("PEERS_ROUNDS", 10);
    let mib: u64 = env_number("PEERS_MIB", 256);
    let idle_s: u64 = env_number("PEERS_IDLE_S", 60);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let sshd = Sshd::start();
    let host = BenchHost::start("");
    let device = runtime.block_on(host.pair_device());
    let client_dir = tempfile::tempdir().expect("client dir");
    let mut hosts = KnownHosts::load(client_dir.path()).expect("hosts");
    hosts.add(device.clone());
    hosts.save().expect("save hosts");

    // 1. First output line.
    let ssh_first: Vec<Duration> = (0..rounds)
        .map(|_| first_line(sshd.ssh(sshd.port, &[], "echo hello")))
        .collect();
    let cli_first: Vec<Duration> = (0..rounds)
        .map(|_| first_line(host_cli(client_dir.path(), &["run", "--", "echo", "hello"])))
        .collect();
    let lib_first: Vec<Duration> = runtime.block_on(async {
        let mut session = open_session(&device).await;
        let mut times = Vec::new();
        for _ in 0..rounds {
            let started = Instant::now();
            let mut first = None;
            let echo = TaskRunParams {
                argv: Some(vec!["echo".into(), "hello".into()]),
                ..TaskRunParams::default()
            };
            run_to_end(&mut session, echo, |_| {
                first.get_or_insert(started.elapsed());
            })
            .await;
            times.push(first.expect("output"));
        }
        times
    });
    println!("first output line of `echo hello` ({rounds} runs each)");
    println!(
        "  ssh localhost (key auth, fresh connection)  {}",
        summary(ssh_first)
    );
    println!(
        "  openwork-host client run (paired)           {}",
        summary(cli_first)
    );
    println!(
        "  library, open session                       {}",
        summary(lib_first)
    );

    // 2. Throughput.
    let bytes = mib << 20;
    let command = repeated_line_command(bytes);
    let started = Instant::now();
    let mut ssh = sshd.ssh(sshd.port, &[], &command).spawn().expect("ssh");
    let mut got = 0u64;
    let mut out = ssh.stdout.take().expect("stdout");
    let mut buf = vec![0u8; 256 * 1024];
    while let Ok(n) = out.read(&mut buf) {
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    let _ = ssh.wait();
    let ssh_time = started.elapsed();
    assert_eq!(got, bytes, "ssh carried every byte");
    let host_time = runtime.block_on(async {
        let mut session = open_session(&device).await;
        let started = Instant::now();
        let mut got = 0u64;
        let print = TaskRunParams {
            command: Some(command.clone()),
            ..TaskRunParams::default()
        };
        run_to_end(&mut session, print, |data| got += data.len() as u64).await;
        assert_eq!(got, bytes, "the host carried every byte");
        started.elapsed()
    });
    let rate = |d: Duration| mib as f64 / d.as_secs_f64();
    println!("throughput, a task printing {mib} MiB");
    println!("  ssh                 {:>7.1} MiB/s", rate(ssh_time));
    println!("  host (TLS, library) {:>7.1} MiB/s", rate(host_time));

    // 3. A 10 s cut mid-stream.
    let ssh_cut = runtime.block_on(ssh_cut(&sshd));
    let mosh_servers_before = pids_named("mosh-server");
    let mosh_cut = runtime.block_on(mosh_cut());
    let host_cut = runtime.block_on(host_cut(&device));
    let show = |o: &CutOutcome| {
        format!(
            "output again {:>9}  lines lost {:>4} of {STREAM_LINES}  duplicated {}",
            o.resumed_after
                .map_or("never".into(), |d| format!("{:.0} ms", support::ms(d))),
            o.lost,
            o.duplicated
        )
    };
    println!(
        "10 s network cut mid-stream (connections closed, link down), after the network's return"
    );
    println!("  ssh   {}", show(&ssh_cut));
    match &mosh_cut {
        // Duplicates are repaints of the same screen rows, not output twice.
        Ok((cut, over_cut)) => println!(
            "  mosh  output again {:>9}  lines never on its screen {:>4} of {STREAM_LINES}, {over_cut} of them printed during the cut",
            cut.resumed_after
                .map_or("never".into(), |d| format!("{:.0} ms", support::ms(d))),
            cut.lost
        ),
        Err(e) => println!("  mosh  not measured: {e}"),
    }
    println!("  host  {}", show(&host_cut));

    // 4. Idle client CPU.
    let mut ssh_idle = sshd
        .ssh(sshd.port, &["-o", "ServerAliveInterval=15"], "sleep 100000")
        .spawn()
        .expect("ssh");
    // mosh-server started directly (what `mosh` starts over ssh), so that a
    // slow ssh under load cannot keep the client from starting.
    let mosh_idle = mosh_server("sleep 100000").and_then(|(port, key)| mosh_client(port, &key));
    let mut host_idle = host_cli(client_dir.path(), &["run", "--", "sleep", "100000"])
        .spawn()
        .expect("client run");
    std::thread::sleep(Duration::from_secs(5));
    let mosh_pid = mosh_client_pid();
    let before = (cpu(ssh_idle.id()), mosh_pid.map(cpu), cpu(host_idle.id()));
    std::thread::sleep(Duration::from_secs(idle_s));
    let after = (cpu(ssh_idle.id()), mosh_pid.map(cpu), cpu(host_idle.id()));
    let per_hour = |d: f64| d * 3600.0 / idle_s as f64;
    println!("idle connected client, CPU seconds per hour (measured over {idle_s} s)");
    println!(
        "  ssh, ServerAliveInterval=15  {:>6.2}",
        per_hour(after.0 - before.0)
    );
    match (before.1, after.1) {
        (Some(b), Some(a)) => println!("  mosh-client                  {:>6.2}", per_hour(a - b)),
        _ => println!("  mosh-client                  not running (mosh did not start headless)"),
    }
    println!(
        "  openwork-host client run     {:>6.2}",
        per_hour(after.2 - before.2)
    );
    let _ = ssh_idle.kill();
    let _ = host_idle.kill();
    let _ = ssh_idle.wait();
    let _ = host_idle.wait();
    if let Some(pid) = mosh_pid {
        terminate(pid);
    }
    // The mosh-server this run started (it would wait for its client for days).
    for pid in pids_named("mosh-server") {
        if !mosh_servers_before.contains(&pid) {
            terminate(pid);
        }
    }
    if let Ok(mut mosh) = mosh_idle {
        let _ = mosh.kill();
        let _ = mosh.wait();
    }
}
