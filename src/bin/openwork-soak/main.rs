//! The compressed-week soak: a real host and several phones (client
//! processes using the client library), each behind its own faulty network
//! path, through Wi-Fi drops, roaming, sleep, host restarts and slow links;
//! counts what the user would have seen and writes a JSON report.
//!
//! `scripts/soak` wraps it. Time is compressed: see `Scale` for the mapping.

#[path = "../../../tests/common/fake_model.rs"]
mod fake_model;
#[path = "../../../tests/common/opencode_server.rs"]
mod opencode_server;
mod path;
mod worker;

/// A progress line on stderr; a stderr that cannot be written (a full
/// disk under a redirect) must not end the soak.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use openwork_host::client::{KnownHost, connect_unix};
use path::NetPath;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;

#[derive(Parser)]
#[command(about = "A compressed week of a phone's life against a real host")]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
    /// How long to run, in hours (default: 90 s, the CI run).
    #[arg(long)]
    hours: Option<f64>,
    /// How long to run, in seconds (overrides --hours).
    #[arg(long)]
    seconds: Option<f64>,
    /// Makes the schedule of faults and the mix of tasks repeatable.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Phones (client processes).
    #[arg(long, default_value_t = 4)]
    clients: u32,
    /// Tasks each phone keeps under way.
    #[arg(long, default_value_t = 6)]
    window: usize,
    /// Where the JSON report goes.
    #[arg(long, default_value = "soak-report.json")]
    report: PathBuf,
    /// The host binary (default: `openwork-host` next to this one).
    #[arg(long)]
    host_bin: Option<PathBuf>,
    /// The OpenCode binary for the prompts in the mix (default:
    /// $OPENWORK_TEST_OPENCODE, else the one scripts/test installs). Without
    /// one the soak says so and runs no prompts; under CI=true it fails.
    #[arg(long)]
    opencode_bin: Option<PathBuf>,
    /// Runs no OpenCode prompts.
    #[arg(long)]
    no_opencode: bool,
    /// One more phone: the web app in Chromium, driven by this node script
    /// (tests/browser/soak-phone.mjs; needs `npm ci` in tests/browser).
    #[arg(long)]
    browser: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Sub {
    /// One phone (started by the soak itself).
    Worker {
        #[arg(long)]
        host_file: String,
        #[arg(long)]
        id: u32,
        #[arg(long)]
        seed: u64,
        #[arg(long)]
        window: usize,
        /// Some of its tasks are OpenCode prompts.
        #[arg(long)]
        opencode: bool,
    },
}

/// Outcomes that are the network's fault; the rest are not failures
/// (`ok`) or are the host's own restarts (`host_restart`).
const DISCONNECT_RELATED: [&str; 7] = [
    "failed",
    "started_twice",
    "lost_output",
    "duplicated_output",
    "gave_up",
    "hung",
    "run_refused",
];

/// The first SIGINT or SIGTERM, by name.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match cli.command {
        Some(Sub::Worker {
            ref host_file,
            id,
            seed,
            window,
            opencode,
        }) => {
            let outcome = runtime.block_on(worker::run(host_file, id, seed, window, opencode));
            // Not waiting for the thread blocked reading stdin.
            runtime.shutdown_background();
            outcome
        }
        None => {
            // Interrupted (Ctrl-C, SIGTERM): the run is dropped, and with it
            // the host and every phone (`kill_on_drop`), rather than left
            // running without their driver.
            let ok = runtime.block_on(async {
                tokio::select! {
                    ok = soak(&cli) => ok,
                    signal = interrupted() => anyhow::bail!("soak: interrupted by {signal}; the host and the phones are stopped"),
                }
            })?;
            if !ok {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

/// The host process, restartable on the same port.
struct Host {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Host {
    /// The last lines of the host's log (its stderr across restarts).
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.data.join("host.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    async fn start(&mut self) -> anyhow::Result<()> {
        let socket = self.data.join("host.sock");
        let _ = std::fs::remove_file(&socket);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data.join("host.log"))?;
        let child = Command::new(&self.bin)
            .arg("--data-dir")
            .arg(&self.data)
            .args(["serve", "--no-mdns", "--listen"])
            .arg(format!("127.0.0.1:{}", self.port))
            .args(["--log", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "the host exited at start ({status}); the end of its log:\n{}",
                    self.log_tail()
                );
            }
            if tokio::net::UnixStream::connect(&socket).await.is_ok()
                && tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                    .await
                    .is_ok()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!(
            "the host did not come up within 60 s; the end of its log:\n{}",
            self.log_tail()
        )
    }

    /// Sends `signal` and waits (bounded) for the exit.
    async fn stop(&mut self, signal: nix::sys::signal::Signal) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Some(pid) = child.id() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
        }
        match tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
            Ok(_) => Ok(()),
            Err(_) => {
                let _ = child.kill().await;
                bail!("the host did not exit within 30 s of {signal}")
            }
        }
    }
}

/// A free port for the host, below the kernel's ephemeral range: the host is
/// restarted on it, and while it is down a port from that range can be
/// taken as the local end of any outgoing connection on the machine (or a
/// connection to it can connect to itself), and the restart could not bind.
fn free_port() -> anyhow::Result<u16> {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let mut rng = rand::rng();
    if ephemeral_low > 10_000 {
        for _ in 0..200 {
            let port = rng.random_range(10_000..ephemeral_low);
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Pairs a device through the library, approving it on the local socket.
async fn pair(data: &Path, port: u16, name: &str) -> anyhow::Result<KnownHost> {
    let mut owner = connect_unix(&data.join("host.sock")).await?;
    let window: Value = owner.call("pairing.open", json!({"ttlS": 120})).await?;
    let request = openwork_host::client::pair::PairRequest {
        address: format!("127.0.0.1:{port}"),
        code: window["code"].as_str().context("no code")?.to_owned(),
        device_name: name.to_owned(),
        scopes: None,
        expected_fingerprint: window["fingerprint"].as_str().map(str::to_owned),
        approval_timeout: Duration::from_secs(30),
    };
    let pairing = tokio::spawn(async move { openwork_host::client::pair::pair(&request).await });
    let requested = tokio::time::timeout(Duration::from_secs(30), owner.next_notification())
        .await
        .context("no pairing request within 30 s")??;
    let _: Value = owner
        .call(
            "pairing.approve",
            json!({"requestId": requested["params"]["requestId"]}),
        )
        .await?;
    tokio::time::timeout(Duration::from_secs(30), pairing)
        .await
        .context("pairing did not finish")??
        .map_err(|e| anyhow::anyhow!("pairing: {e}"))
}

/// A phone process and its network path.
struct Phone {
    child: Child,
    stdin: ChildStdin,
    path: NetPath,
    /// No new fault for this phone before this.
    busy_until: Instant,
    /// The web app in Chromium (not put to sleep: stopping node would not stop Chromium).
    browser: bool,
}

impl Phone {
    async fn tell(&mut self, line: &str) {
        let _ = self.stdin.write_all(format!("{line}\n").as_bytes()).await;
        let _ = self.stdin.flush().await;
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
        }
    }
}

/// The faults, in real seconds. One simulated minute is 3 real seconds for
/// sleep and link-down; the client's liveness (15 s by default) is 3 s, so a
/// phone asleep or a link down past ~6 s is one the client gives up on.
mod scale {
    pub const SLEEP_S: (f64, f64) = (6.0, 30.0); // 2 to 10 "minutes"
    pub const SHORT_DOWN_S: (f64, f64) = (0.3, 5.0); // seconds
    pub const LONG_DOWN_S: (f64, f64) = (8.0, 30.0); // ~3 to 10 "minutes"
    pub const SLOW_LINK_S: (f64, f64) = (10.0, 40.0);
    pub const GAP_S: (f64, f64) = (2.0, 8.0); // between faults on one phone
    pub const RESTART_EVERY_S: f64 = 300.0;
}

/// The kinds of fault, each run once first so that a short run sees them all.
const TOUR: [&str; 8] = [
    "cut",
    "roam",
    "down",
    "sleep",
    "slow",
    "stall",
    "down_long",
    "cut",
];

async fn soak(cli: &Cli) -> anyhow::Result<bool> {
    let duration = Duration::from_secs_f64(
        cli.seconds
            .or(cli.hours.map(|h| h * 3600.0))
            .unwrap_or(90.0),
    );
    let me = std::env::current_exe()?;
    let host_bin = match &cli.host_bin {
        Some(bin) => bin.clone(),
        None => me
            .parent()
            .context("no directory for this binary")?
            .join("openwork-host"),
    };
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&data)?;
    std::fs::create_dir_all(&work)?;
    let opencode = opencode_binary(cli)?;
    // The fake model lives in this process, for the whole run.
    let model = match &opencode {
        Some(_) => Some(fake_model::FakeModel::start(fake_model::FROM_PROMPT).await),
        None => None,
    };
    let mut config = format!(
        "[tasks]\nworkspace_roots = [{:?}]\nmax_concurrent = 16\nkill_grace_ms = 1000\n\n[pairing]\nfailure_pause_ms = 50\n\n",
        work.display().to_string()
    );
    match (&opencode, &model) {
        (Some(binary), Some(model)) => {
            // OpenCode asks before its bash tool runs: the phone answers.
            std::fs::write(work.join("opencode.json"), model.opencode_json())?;
            config.push_str(&format!(
                "[opencode]\nenabled = \"on\"\nbinary = {:?}\nstartup_timeout_s = 600\n\n[opencode.env]\n",
                binary.display().to_string()
            ));
            for (k, v) in opencode_server::isolated_env(&dir.path().join("oc-home")) {
                config.push_str(&format!("{k} = {v:?}\n"));
            }
        }
        _ => config.push_str("[opencode]\nenabled = \"off\"\n"),
    }
    std::fs::write(data.join("config.toml"), config)?;
    let port = free_port()?;
    let mut host = Host {
        bin: host_bin,
        data: data.clone(),
        port,
        child: None,
    };
    host.start().await?;
    if opencode.is_some() {
        opencode_ready(&data).await?;
    }

    let upstream: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let mut rng = StdRng::seed_from_u64(cli.seed);
    let (lines_tx, mut lines) = mpsc::unbounded_channel::<Value>();
    let mut phones = Vec::new();
    for w in 0..cli.clients {
        let device = pair(&data, port, &format!("phone-{w}")).await?;
        let path = NetPath::start(upstream).await?;
        let host_file = dir.path().join(format!("phone-{w}.json"));
        std::fs::write(
            &host_file,
            serde_json::to_vec(&KnownHost {
                address: path.address.clone(),
                ..device
            })?,
        )?;
        let mut child = Command::new(&me)
            .arg("worker")
            .arg("--host-file")
            .arg(&host_file)
            .args(["--id", &w.to_string()])
            .args(["--seed", &cli.seed.to_string()])
            .args(["--window", &cli.window.to_string()])
            .args(opencode.as_ref().map(|_| "--opencode"))
            .current_dir(&work)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take().context("stdin")?;
        let stdout = child.stdout.take().context("stdout")?;
        let tx = lines_tx.clone();
        tokio::spawn(async move {
            let mut out = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = out.next_line().await {
                if let Ok(value) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(value);
                }
            }
        });
        phones.push(Phone {
            child,
            stdin,
            path,
            busy_until: Instant::now() + secs(rng.random_range(0.5..3.0)),
            browser: false,
        });
    }
    if let Some(script) = &cli.browser {
        let phone =
            browser_phone(script, &data, upstream, cli.clients, cli.seed, &lines_tx).await?;
        phones.push(phone);
    }
    drop(lines_tx);
    say!(
        "soak: seed {}, {} phones, {} s, host on 127.0.0.1:{port}, data in {}",
        cli.seed,
        cli.clients,
        duration.as_secs(),
        data.display()
    );

    let started = Instant::now();
    let end = started + duration;
    let mut events: BTreeMap<String, u64> = BTreeMap::new();
    let mut tour = TOUR.iter().cycle().take(TOUR.len() * cli.clients as usize);
    // Faults that end later: (when, phone, what to undo).
    let mut undo: Vec<(Instant, usize, &'static str)> = Vec::new();
    // Restarts: at 30 % and 60 % of a short run (one SIGTERM, one SIGKILL),
    // every 5 minutes in a long one.
    let restart_every = if duration.as_secs_f64() < 3.0 * scale::RESTART_EVERY_S {
        duration.as_secs_f64() * 0.3
    } else {
        scale::RESTART_EVERY_S
    };
    let mut next_restart = started + secs(restart_every);
    let mut restarts = 0u64;
    let mut outcomes: Vec<Value> = Vec::new();
    let mut last_progress = Instant::now();
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(50)).await;
        while let Ok(line) = lines.try_recv() {
            outcomes.push(line);
        }
        let now = Instant::now();
        // Undo faults whose time is up, and say when the network returned.
        let (due, later): (Vec<_>, Vec<_>) = undo.drain(..).partition(|(at, _, _)| *at <= now);
        undo = later;
        for (_, p, what) in due {
            let phone = &mut phones[p];
            match what {
                "sleep" => phone.signal(nix::sys::signal::Signal::SIGCONT),
                "slow" => phone.path.update(|s| {
                    s.latency = Duration::ZERO;
                    s.rate = 0;
                }),
                _ => phone.path.update(|s| s.up = true),
            }
            phone
                .tell(&format!("mark {what} {}", worker::mono_ms()))
                .await;
        }
        // A host restart now and then, with tasks running.
        if now >= next_restart && now + secs(20.0) < end {
            let kill = restarts % 2 == 1;
            let signal = if kill {
                nix::sys::signal::Signal::SIGKILL
            } else {
                nix::sys::signal::Signal::SIGTERM
            };
            say!(
                "soak: {:>6.1} s  host restart ({signal})",
                started.elapsed().as_secs_f64()
            );
            host.stop(signal).await?;
            host.start().await?;
            let at = worker::mono_ms();
            // Measured only on phones whose own network is fine at the moment.
            for (p, phone) in phones.iter_mut().enumerate() {
                if !undo.iter().any(|(_, q, _)| *q == p) {
                    phone.tell(&format!("mark restart {at}")).await;
                }
            }
            *events
                .entry(format!("restart_{}", if kill { "kill" } else { "term" }))
                .or_default() += 1;
            restarts += 1;
            next_restart = started + secs(restart_every * (restarts + 1) as f64);
        }
        // A new fault for each idle phone.
        for (p, phone) in phones.iter_mut().enumerate() {
            let now = Instant::now();
            if phone.busy_until > now || now + secs(10.0) > end {
                continue;
            }
            let kind = match tour.next() {
                Some(kind) => *kind,
                None => ["cut", "roam", "down", "sleep", "slow", "stall", "down_long"]
                    [rng.random_range(0..7)],
            };
            let kind = if phone.browser && kind == "sleep" {
                "down"
            } else {
                kind
            };
            let lasts = match kind {
                "cut" => {
                    phone.path.update(|s| s.cut += 1);
                    phone.tell(&format!("mark cut {}", worker::mono_ms())).await;
                    0.0
                }
                "roam" => {
                    phone.path.update(|s| s.epoch += 1);
                    say!(
                        "soak: {:>6.1} s  phone {p} roams",
                        started.elapsed().as_secs_f64()
                    );
                    phone
                        .tell(&format!("mark roam {}", worker::mono_ms()))
                        .await;
                    0.0
                }
                "down" | "stall" | "down_long" => {
                    let range = match kind {
                        "down_long" => scale::LONG_DOWN_S,
                        "stall" => (0.2, 2.0),
                        _ => scale::SHORT_DOWN_S,
                    };
                    let d = rng.random_range(range.0..range.1);
                    phone.path.update(|s| s.up = false);
                    undo.push((now + secs(d), p, kind));
                    d
                }
                "sleep" => {
                    let d = rng.random_range(scale::SLEEP_S.0..scale::SLEEP_S.1);
                    phone.signal(nix::sys::signal::Signal::SIGSTOP);
                    undo.push((now + secs(d), p, "sleep"));
                    d
                }
                _ => {
                    let d = rng.random_range(scale::SLOW_LINK_S.0..scale::SLOW_LINK_S.1);
                    let latency = Duration::from_millis(rng.random_range(0..=2000));
                    let rate = [64 * 1024, 256 * 1024, 1024 * 1024, 0][rng.random_range(0..4)];
                    phone.path.update(|s| {
                        s.latency = latency;
                        s.rate = rate;
                    });
                    undo.push((now + secs(d), p, "slow"));
                    d
                }
            };
            *events.entry(kind.to_owned()).or_default() += 1;
            phone.busy_until = now + secs(lasts + rng.random_range(scale::GAP_S.0..scale::GAP_S.1));
        }
        if last_progress.elapsed() > Duration::from_secs(30) {
            last_progress = Instant::now();
            let tasks = outcomes.iter().filter(|o| o["t"] == "task").count();
            say!(
                "soak: {:>6.1} s  {tasks} tasks done, faults {events:?}",
                started.elapsed().as_secs_f64()
            );
        }
    }
    // The week is over: the network heals, every phone wakes, and the tasks under way finish.
    for (_, p, what) in undo.drain(..) {
        let phone = &mut phones[p];
        if what == "sleep" {
            phone.signal(nix::sys::signal::Signal::SIGCONT);
        }
    }
    for phone in &mut phones {
        phone.path.update(|s| {
            s.up = true;
            s.latency = Duration::ZERO;
            s.rate = 0;
        });
        phone.signal(nix::sys::signal::Signal::SIGCONT);
        phone.tell("stop").await;
    }
    let drain_deadline = Instant::now() + Duration::from_secs(120);
    for phone in &mut phones {
        let left = drain_deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left, phone.child.wait())
            .await
            .is_err()
        {
            say!("soak: a phone did not finish in time; stopping it");
            // Node closes its Chromium on SIGTERM.
            phone.signal(nix::sys::signal::Signal::SIGTERM);
            if tokio::time::timeout(Duration::from_secs(15), phone.child.wait())
                .await
                .is_err()
            {
                let _ = phone.child.kill().await;
            }
        }
    }
    // Every line the phones wrote (their stdout closes as they exit).
    while let Some(line) = tokio::time::timeout(Duration::from_secs(5), lines.recv())
        .await
        .ok()
        .flatten()
    {
        outcomes.push(line);
    }
    let host_tasks = host_tasks(&data).await?;
    check_browser_tasks(&data, &mut outcomes).await?;
    host.stop(nix::sys::signal::Signal::SIGTERM).await?;
    let report = report(cli, duration, &outcomes, &host_tasks, &events, &phones);
    std::fs::write(&cli.report, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("writing {}", cli.report.display()))?;
    print_summary(&report);
    say!("soak: report in {}", cli.report.display());
    Ok(report["disconnect_related"]["total"] == 0 && report["consistent"] == true)
}

/// The OpenCode binary to use, or `None` (said on stderr; an error under CI).
fn opencode_binary(cli: &Cli) -> anyhow::Result<Option<PathBuf>> {
    if cli.no_opencode {
        say!("soak: no OpenCode prompts (--no-opencode)");
        return Ok(None);
    }
    let found = match &cli.opencode_bin {
        Some(bin) => Some(bin.clone()),
        None => opencode_server::installed_binary(),
    };
    match found {
        Some(bin) if bin.is_file() => Ok(Some(bin)),
        other => {
            let looked = other.map_or_else(
                || "$OPENWORK_TEST_OPENCODE or target/test-deps".to_owned(),
                |b| b.display().to_string(),
            );
            if std::env::var_os("CI").is_some() {
                bail!(
                    "OpenCode is not installed (looked for {looked}): run scripts/test, which installs it"
                );
            }
            say!(
                "soak: skipping OpenCode prompts: OpenCode is not installed (looked for {looked}; scripts/test installs it)"
            );
            Ok(None)
        }
    }
}

/// Waits (bounded) until the host says its OpenCode is ready; past the
/// bound the soak goes on (each prompt is asked again while OpenCode starts).
async fn opencode_ready(data: &Path) -> anyhow::Result<()> {
    let mut owner = connect_unix(&data.join("host.sock")).await?;
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut state = Value::Null;
    while Instant::now() < deadline {
        let health: Value = owner.call("health.get", json!({})).await?;
        state = health["runtimes"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["name"] == "opencode"))
            .map(|r| r["state"].clone())
            .unwrap_or(Value::Null);
        if state == "ready" {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    say!("soak: OpenCode is not ready after 180 s (its state: {state}); going on");
    Ok(())
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

/// Starts the web app in Chromium as one more phone behind its own path,
/// pairing it from the QR link and approving it as the owner.
async fn browser_phone(
    script: &Path,
    data: &Path,
    upstream: SocketAddr,
    w: u32,
    seed: u64,
    lines_tx: &mpsc::UnboundedSender<Value>,
) -> anyhow::Result<Phone> {
    let listen = SocketAddr::from(([127, 0, 0, 3], upstream.port()));
    let path = NetPath::start_at(listen, upstream).await?;
    let mut owner = connect_unix(&data.join("host.sock")).await?;
    let window: Value = owner.call("pairing.open", json!({"ttlS": 300})).await?;
    let args = json!({
        "origin": format!("https://{}", path.address),
        "code": window["code"],
        "fingerprint": window["fingerprint"],
        "hostId": window["hostId"],
        "w": w,
        "seed": seed,
    });
    let mut child = Command::new("node")
        .arg(script)
        .arg(args.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting node {}", script.display()))?;
    let stdin = child.stdin.take().context("stdin")?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut out = BufReader::new(stdout).lines();
    let requested = tokio::time::timeout(Duration::from_secs(180), owner.next_notification())
        .await
        .context("the web app asked for no pairing within 180 s")??;
    let _: Value = owner
        .call(
            "pairing.approve",
            json!({"requestId": requested["params"]["requestId"]}),
        )
        .await?;
    // Its first line says it is paired (bounded: Chromium starts slowly on a busy machine).
    let first = tokio::time::timeout(Duration::from_secs(180), out.next_line())
        .await
        .context("the web app did not connect within 180 s of its approval")??;
    if !first.is_some_and(|l| l.contains("\"paired\"")) {
        bail!("the web app did not pair (see its messages above)");
    }
    say!("soak: the web app in Chromium is phone {w}");
    let tx = lines_tx.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = out.next_line().await {
            if let Ok(value) = serde_json::from_str::<Value>(&line) {
                let _ = tx.send(value);
            }
        }
    });
    Ok(Phone {
        child,
        stdin,
        path,
        busy_until: Instant::now() + secs(5.0),
        browser: true,
    })
}

/// The web app's tasks against what the host recorded: the log the app
/// showed must be the host's log, byte for byte (a prefix when the host
/// restarted mid-task). A difference becomes that task's outcome.
async fn check_browser_tasks(data: &Path, outcomes: &mut [Value]) -> anyhow::Result<()> {
    let mut owner = connect_unix(&data.join("host.sock")).await?;
    for line in outcomes.iter_mut() {
        if line["browser"] != true || line["outcome"] == "gave_up" || line["outcome"] == "hung" {
            continue;
        }
        let Some(task_id) = line["taskId"].as_str().map(str::to_owned) else {
            continue;
        };
        let mut recorded: Vec<u8> = Vec::new();
        let mut from = 1u64;
        // Bounded: the app's tasks are small.
        for _ in 0..1000 {
            let page: openwork_host::protocol::TaskLogsResult = serde_json::from_value(
                owner
                    .call(
                        "task.logs",
                        json!({"taskId": task_id, "fromSeq": from, "limit": 1000}),
                    )
                    .await?,
            )?;
            for chunk in &page.chunks {
                recorded.extend(openwork_host::tasks::chunk::chunk_bytes(chunk));
            }
            if page.done || page.chunks.is_empty() {
                break;
            }
            from = page.next_seq;
        }
        let recorded = String::from_utf8_lossy(&recorded).into_owned();
        let shown = line["output"].as_str().unwrap_or("").to_owned();
        let interrupted = line["status"] == "interrupted";
        let agrees = if interrupted {
            recorded.starts_with(&shown)
        } else {
            recorded == shown
        };
        line["hostAgrees"] = json!(agrees);
        if !agrees {
            line["outcome"] = json!(if shown.len() > recorded.len() {
                "duplicated_output"
            } else {
                "lost_output"
            });
            line["detail"] = json!(format!(
                "the app showed {} bytes, the host recorded {}",
                shown.len(),
                recorded.len()
            ));
        }
    }
    Ok(())
}

/// Every task the host knows, by title (`w{phone}-t{k}`), through `task.list`.
async fn host_tasks(data: &Path) -> anyhow::Result<HashMap<String, Vec<Value>>> {
    let mut owner = connect_unix(&data.join("host.sock")).await?;
    let mut by_title: HashMap<String, Vec<Value>> = HashMap::new();
    let mut before: Option<String> = None;
    // Bounded: a million tasks at 500 a page.
    for _ in 0..2000 {
        let mut params = json!({"limit": 500});
        if let Some(before) = &before {
            params["before"] = json!(before);
        }
        let page: Value = owner.call("task.list", params).await?;
        let tasks = page["tasks"].as_array().cloned().unwrap_or_default();
        let Some(last) = tasks.last() else { break };
        before = last["taskId"].as_str().map(str::to_owned);
        for task in tasks {
            let title = task["title"].as_str().unwrap_or("").to_owned();
            by_title.entry(title).or_default().push(task);
        }
    }
    Ok(by_title)
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    Some(sorted[i.min(sorted.len() - 1)])
}

fn report(
    cli: &Cli,
    duration: Duration,
    outcomes: &[Value],
    host_tasks: &HashMap<String, Vec<Value>>,
    events: &BTreeMap<String, u64>,
    phones: &[Phone],
) -> Value {
    let mut by_outcome: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
    let mut examples: Vec<Value> = Vec::new();
    let mut tasks = 0u64;
    let mut started = 0u64;
    let mut reconnects = 0u64;
    let mut retried = 0u64;
    let mut flows: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for line in outcomes {
        match line["t"].as_str() {
            Some("task") => {
                tasks += 1;
                let mut outcome = line["outcome"].as_str().unwrap_or("?").to_owned();
                let title = format!("w{}-t{}", line["w"], line["k"]);
                if host_tasks.get(&title).is_some_and(|t| t.len() > 1) {
                    outcome = "started_twice".into();
                }
                *by_outcome.entry(outcome.clone()).or_default() += 1;
                *by_kind
                    .entry(line["kind"].as_str().unwrap_or("?").to_owned())
                    .or_default() += 1;
                if outcome != "ok" && outcome != "host_restart" && examples.len() < 20 {
                    examples.push(line.clone());
                }
            }
            Some("flow") => {
                if let (Some(after), Some(ms)) = (line["after"].as_str(), line["ms"].as_f64()) {
                    flows.entry(after.to_owned()).or_default().push(ms);
                }
            }
            Some("stats") => {
                started += line["started"].as_u64().unwrap_or(0);
                reconnects += line["reconnects"].as_u64().unwrap_or(0);
                retried += line["retried_calls"].as_u64().unwrap_or(0);
            }
            _ => {}
        }
    }
    let disconnect: BTreeMap<&str, u64> = DISCONNECT_RELATED
        .iter()
        .map(|cause| (*cause, by_outcome.get(*cause).copied().unwrap_or(0)))
        .collect();
    let total_disconnect: u64 = disconnect.values().sum();
    let mut all_flows: Vec<f64> = flows.values().flatten().copied().collect();
    all_flows.sort_by(f64::total_cmp);
    // The network's own faults (a host restart is not the network returning).
    let mut network_flows: Vec<f64> = flows
        .iter()
        .filter(|(kind, _)| kind.as_str() != "restart")
        .flat_map(|(_, ms)| ms.iter().copied())
        .collect();
    network_flows.sort_by(f64::total_cmp);
    let reconnect_ms: BTreeMap<String, Value> = flows
        .iter_mut()
        .map(|(kind, ms)| {
            ms.sort_by(f64::total_cmp);
            (
                kind.clone(),
                json!({"n": ms.len(), "p50": percentile(ms, 0.5), "p99": percentile(ms, 0.99), "max": ms.last()}),
            )
        })
        .collect();
    let host_count: usize = host_tasks
        .iter()
        .filter(|(title, _)| title.starts_with('w'))
        .map(|(_, t)| t.len())
        .sum();
    let titles = host_tasks.keys().filter(|t| t.starts_with('w')).count() as u64;
    // The counts add up: every task a phone started has one outcome, and the
    // host holds one task per title (a second one is `started_twice`).
    let consistent = tasks == started && by_outcome.values().sum::<u64>() == tasks;
    json!({
        "seed": cli.seed,
        "seconds": duration.as_secs_f64(),
        "phones": cli.clients,
        "window": cli.window,
        "tasks": tasks,
        "tasks_started_by_phones": started,
        "host_tasks": host_count,
        "host_titles": titles,
        "consistent": consistent,
        "by_outcome": by_outcome,
        "by_kind": by_kind,
        "disconnect_related": {
            "total": total_disconnect,
            "rate": if tasks > 0 { total_disconnect as f64 / tasks as f64 } else { 0.0 },
            "by_cause": disconnect,
        },
        "faults": events,
        "reconnects": reconnects,
        "calls_sent_again": retried,
        "connections_through_paths": phones.iter().map(|p| p.path.accepted()).sum::<u64>(),
        "reconnect_ms": {
            "all": {"n": all_flows.len(), "p50": percentile(&all_flows, 0.5), "p99": percentile(&all_flows, 0.99), "max": all_flows.last()},
            "network": {"n": network_flows.len(), "p50": percentile(&network_flows, 0.5), "p99": percentile(&network_flows, 0.99), "max": network_flows.last()},
            "by_fault": reconnect_ms,
        },
        "examples": examples,
        "browser_client": {
            "tasks": outcomes.iter().filter(|o| o["t"] == "task" && o["browser"] == true).count(),
            "checked_against_host": outcomes.iter().filter(|o| o["hostAgrees"] == true).count(),
            "run_tapped_again": outcomes.iter().filter(|o| o["runTappedAgain"].is_number()).count(),
        },
        "opencode": by_kind.get("opencode").copied().unwrap_or(0),
    })
}

fn print_summary(report: &Value) {
    println!(
        "tasks: {} in {:.0} s ({} phones); host holds {} tasks under {} titles; counts consistent: {}",
        report["tasks"],
        report["seconds"].as_f64().unwrap_or(0.0),
        report["phones"],
        report["host_tasks"],
        report["host_titles"],
        report["consistent"]
    );
    println!("outcomes:");
    if let Some(by) = report["by_outcome"].as_object() {
        for (outcome, n) in by {
            println!("  {outcome:<18} {n}");
        }
    }
    println!(
        "disconnect-related failures: {} ({:.4} %)",
        report["disconnect_related"]["total"],
        report["disconnect_related"]["rate"].as_f64().unwrap_or(0.0) * 100.0
    );
    if let Some(by) = report["disconnect_related"]["by_cause"].as_object() {
        for (cause, n) in by {
            println!("  {cause:<18} {n}");
        }
    }
    println!(
        "faults: {}; reconnects {}, calls sent again {}",
        report["faults"], report["reconnects"], report["calls_sent_again"]
    );
    println!("output flowing again after the network returned (ms):");
    for which in ["all", "network"] {
        let s = &report["reconnect_ms"][which];
        println!(
            "  {:<10} n={:<5} p50={:<8.0} p99={:<8.0} max={:.0}",
            which,
            s["n"],
            s["p50"].as_f64().unwrap_or(f64::NAN),
            s["p99"].as_f64().unwrap_or(f64::NAN),
            s["max"].as_f64().unwrap_or(f64::NAN)
        );
    }
    if let Some(by) = report["reconnect_ms"]["by_fault"].as_object() {
        for (kind, s) in by {
            println!(
                "  {:<10} n={:<5} p50={:<8.0} p99={:<8.0} max={:.0}",
                kind,
                s["n"],
                s["p50"].as_f64().unwrap_or(f64::NAN),
                s["p99"].as_f64().unwrap_or(f64::NAN),
                s["max"].as_f64().unwrap_or(f64::NAN)
            );
        }
    }
}
