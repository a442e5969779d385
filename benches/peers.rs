//! The host next to what a person would use instead, on loopback, in one run:
//! - first output line of `echo hello`: `ssh` (key auth, fresh connection),
//!   `openwork-host client run` (paired), and the library on an open session;
//! - throughput of a task printing 256 MiB: ssh vs the host over TLS;
//! - a 10 s network cut mid-stream (the soak's network path: live
//!   connections closed and the link down for 10 s): when output flows again
//!   after the network's return, and how many lines were lost;
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

    fn ssh_line(&self, port: u16) -> String {
        format!(
            "ssh -i {} -p {port} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR",
            self.dir.path().join("client_key").display()
        )
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

fn count(lines: &[u64]) -> (u64, u64) {
    let mut seen = std::collections::HashSet::new();
    let mut dup = 0;
    for l in lines {
        if !seen.insert(*l) {
            dup += 1;
        }
    }
    let lost = (1..=STREAM_LINES).filter(|l| !seen.contains(l)).count() as u64;
    (lost, dup)
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
    let resumed_after = lines
        .iter()
        .find(|(at, _)| *at >= back)
        .map(|(at, _)| *at - back);
    let (lost, duplicated) = count(&lines.iter().map(|(_, l)| *l).collect::<Vec<_>>());
    CutOutcome {
        resumed_after,
        lost,
        duplicated,
    }
}

async fn host_cut(device: &KnownHost) -> CutOutcome {
    let upstream = device.address.parse().expect("addr");
    let path = NetPath::start(upstream).await.expect("path");
    let via = KnownHost {
        address: path.address.clone(),
        ..device.clone()
    };
    // The library's defaults, as `client run` uses them.
    let mut session = HostSession::open(via, "peers-bench", ReconnectPolicy::default())
        .await
        .expect("session");
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
    let resumed_after = lines
        .iter()
        .find(|(at, _)| *at >= back)
        .map(|(at, _)| *at - back);
    let (lost, duplicated) = count(&lines.iter().map(|(_, l)| *l).collect::<Vec<_>>());
    CutOutcome {
        resumed_after,
        lost,
        duplicated,
    }
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
        let mut session =
            HostSession::open(device.clone(), "peers-bench", ReconnectPolicy::default())
                .await
                .expect("session");
        let mut times = Vec::new();
        for _ in 0..rounds {
            let started = Instant::now();
            let task = session
                .run_task(TaskRunParams {
                    argv: Some(vec!["echo".into(), "hello".into()]),
                    ..TaskRunParams::default()
                })
                .await
                .expect("task.run");
            let mut first = None;
            loop {
                match session.next_notice().await.expect("notice") {
                    Notice::Chunk(c) if c.task_id == task.task_id && first.is_none() => {
                        first = Some(started.elapsed());
                    }
                    Notice::Updated(u) if u.task_id == task.task_id && u.status.is_final() => break,
                    _ => {}
                }
            }
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
        let mut session =
            HostSession::open(device.clone(), "peers-bench", ReconnectPolicy::default())
                .await
                .expect("session");
        let started = Instant::now();
        let task = session
            .run_task(TaskRunParams {
                command: Some(command.clone()),
                ..TaskRunParams::default()
            })
            .await
            .expect("task.run");
        let mut got = 0u64;
        loop {
            match session.next_notice().await.expect("notice") {
                Notice::Chunk(c) if c.task_id == task.task_id => got += c.data.len() as u64,
                Notice::Updated(u) if u.task_id == task.task_id && u.status.is_final() => break,
                _ => {}
            }
        }
        assert_eq!(got, bytes, "the host carried every byte");
        started.elapsed()
    });
    let rate = |d: Duration| mib as f64 / d.as_secs_f64();
    println!("throughput, a task printing {mib} MiB");
    println!("  ssh                 {:>7.1} MiB/s", rate(ssh_time));
    println!("  host (TLS, library) {:>7.1} MiB/s", rate(host_time));

    // 3. A 10 s cut mid-stream.
    let ssh_cut = runtime.block_on(ssh_cut(&sshd));
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
    println!("  host  {}", show(&host_cut));
    println!(
        "  mosh  not measured: its data path is UDP, which the TCP path cannot cut (see README)"
    );

    // 4. Idle client CPU.
    let mosh_servers_before = pids_named("mosh-server");
    let mut ssh_idle = sshd
        .ssh(sshd.port, &["-o", "ServerAliveInterval=15"], "sleep 100000")
        .spawn()
        .expect("ssh");
    let mosh_idle = Command::new("script")
        .args(["-qfc"])
        .arg(format!(
            // `script`'s terminal has no size, which mosh-client refuses.
            "stty rows 24 cols 80; mosh --ssh='{}' root@127.0.0.1 -- sleep 100000",
            sshd.ssh_line(sshd.port)
        ))
        .arg("/dev/null")
        .env("LANG", "C.UTF-8")
        .env("TERM", "xterm")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
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
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    // The mosh-server this run started (it would wait for its client for days).
    for pid in pids_named("mosh-server") {
        if !mosh_servers_before.contains(&pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
    if let Ok(mut mosh) = mosh_idle {
        let _ = mosh.kill();
        let _ = mosh.wait();
    }
}
