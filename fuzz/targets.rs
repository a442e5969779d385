//! The fuzz targets, shared by the AFL binaries in `fuzz/` (`scripts/fuzz`)
//! and the short deterministic run in `tests/fuzz_smoke.rs`. Each takes any
//! bytes and must neither panic nor hang; a target that checks a property
//! (a frame written and read back is the same frame) panics when it fails.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use openwork_host::Host;
use openwork_host::auth::Principal;
use openwork_host::config::Config;
use openwork_host::datadir::DataDir;
use openwork_host::permissions::policy::{Action, RuleConfig};
use openwork_host::permissions::{PermissionsConfig, Policy, shell};
use openwork_host::protocol::PairingOpenParams;
use openwork_host::rpc::message;
use openwork_host::session::SessionOptions;
use openwork_host::transport::codec::{
    FrameReader, FrameWriter, Framing, FramingMode, FramingSlot, ReadEvent,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A fuzz target: any bytes in, a panic when something is wrong.
pub type Target = fn(&[u8]);

/// Every target by name, for the harnesses.
pub const TARGETS: &[(&str, Target)] = &[
    ("codec", codec),
    ("message", message_parse),
    ("dispatch", dispatch),
    ("pairing", pairing),
    ("shell", shell_policy),
    ("config", config_toml),
];

/// How long one input may keep a host busy before it counts as a hang.
const HANG: Duration = Duration::from_secs(10);

/// Where the targets keep files: `OPENWORK_FUZZ_DIR` (AFL starts a new
/// process every so many inputs, and they share it), else a directory of
/// this process's own under the temp dir.
pub fn scratch_dir() -> PathBuf {
    match std::env::var_os("OPENWORK_FUZZ_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::temp_dir().join(format!("openwork-fuzz-{}", std::process::id())),
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

/// The frame codec, both framings and detection. The first byte picks the
/// mode and the frame limit; the rest is the stream. A frame written by
/// the writer must read back as itself.
pub fn codec(data: &[u8]) {
    let Some((&head, stream)) = data.split_first() else {
        return;
    };
    let mode = match head % 3 {
        0 => FramingMode::Fixed(Framing::Lsp),
        1 => FramingMode::Fixed(Framing::Ndjson),
        _ => FramingMode::Detect,
    };
    let limit = 16usize << (head / 3 % 12);
    runtime().block_on(async {
        let mut reader = FrameReader::new(stream, mode, limit);
        // Each event consumes at least one byte, or ends the stream.
        for _ in 0..=stream.len() + 1 {
            match tokio::time::timeout(HANG, reader.next()).await {
                Err(_) => panic!("the frame reader hung"),
                Ok(Ok(ReadEvent::Frame(body))) => {
                    assert!(body.len() <= limit, "a frame over the limit was returned");
                }
                Ok(Ok(ReadEvent::TooLarge { .. })) => {}
                Ok(Ok(ReadEvent::Eof)) | Ok(Err(_)) => break,
            }
        }
        // Round trip: the stream as one LSP frame body, and as one NDJSON
        // line when it is one (no line ending in it, not blank).
        let mut framings = vec![Framing::Lsp];
        if !stream.contains(&b'\n')
            && !stream.contains(&b'\r')
            && !stream.iter().all(u8::is_ascii_whitespace)
        {
            framings.push(Framing::Ndjson);
        }
        for framing in framings {
            let mut wire = Vec::new();
            let mut writer = FrameWriter::new(&mut wire, FramingSlot::fixed(framing));
            writer.write_frame(stream).await.expect("writes to memory");
            writer.flush().await.expect("flushes to memory");
            drop(writer);
            // (Not usize::MAX: the NDJSON reader adds 2 to its limit, see the report.)
            let mut reader = FrameReader::new(&wire[..], FramingMode::Fixed(framing), 1 << 30);
            match reader.next().await {
                Ok(ReadEvent::Frame(body)) => {
                    assert_eq!(body, stream, "{framing:?} frame read back differs")
                }
                other => panic!("{framing:?} frame did not read back: {other:?}"),
            }
        }
    });
}

/// JSON-RPC message parsing: requests, notifications, responses, batches.
pub fn message_parse(data: &[u8]) {
    let _ = message::parse_frame(data);
    let _ = message::answered(data);
}

/// A host in a temporary data dir, opened once per process. Its policy
/// denies every command, so no input can make it run one.
fn host() -> &'static Host {
    static HOST: OnceLock<(Host, PathBuf)> = OnceLock::new();
    &HOST
        .get_or_init(|| {
            let dir = scratch_dir();
            let work = dir.join("work");
            std::fs::create_dir_all(&work).expect("a temp dir");
            let mut config = Config::default();
            config.tasks.workspace_roots = vec![work];
            config.permissions = PermissionsConfig {
                use_default_rules: false,
                rules: vec![RuleConfig {
                    id: Some("fuzzing".to_owned()),
                    action: Action::Deny,
                    program: None,
                    args: None,
                    pattern: Some(String::new()),
                    explain: "nothing runs while fuzzing".to_owned(),
                }],
                ..PermissionsConfig::default()
            };
            config.opencode.enabled = openwork_host::config::Enabled::Off;
            config.pairing.failure_pause_ms = 0;
            config.pairing.max_failures = u32::MAX;
            config.metrics.telemetry = false;
            let data_dir = DataDir::resolve(Some(dir.join("data"))).expect("a data dir");
            let host = runtime()
                .block_on(Host::open(data_dir, Some(config)))
                .expect("the host opens");
            (host, dir)
        })
        .0
}

/// Serves `data` as one connection's input and reads everything the host
/// answers until it closes the connection (the first MiB of it is returned).
fn serve(data: &[u8], opts: SessionOptions) -> Vec<u8> {
    let host = host();
    runtime().block_on(async {
        let (client, server) = openwork_host::transport::in_memory_pair();
        let (read, write) = tokio::io::split(server);
        let reader = FrameReader::new(read, FramingMode::Detect, 1 << 20);
        let writer = FrameWriter::new(write, reader.framing());
        let session = tokio::spawn(async move {
            let _ = host.serve_connection(reader, writer, opts).await;
        });
        let (mut from_host, mut to_host) = tokio::io::split(client);
        let input = data.to_vec();
        let feed = tokio::spawn(async move {
            let _ = to_host.write_all(&input).await;
            let _ = to_host.shutdown().await;
        });
        let drain = async {
            let mut answers = Vec::new();
            let mut chunk = vec![0u8; 64 * 1024];
            while let Ok(n @ 1..) = from_host.read(&mut chunk).await {
                if answers.len() < 1 << 20 {
                    answers.extend_from_slice(&chunk[..n]);
                }
            }
            answers
        };
        let Ok(answers) = tokio::time::timeout(HANG, drain).await else {
            panic!("the host did not close the connection within {HANG:?} of its input ending");
        };
        let _ = feed.await;
        let _ = tokio::time::timeout(HANG, session).await;
        answers
    })
}

/// Messages and dispatch: any stream from the host's owner, so that every
/// method's params are decoded (and handled, with nothing allowed to run).
pub fn dispatch(data: &[u8]) {
    dispatch_answers(data);
}

/// What the host answers a connection of its owner's.
pub fn dispatch_answers(data: &[u8]) -> Vec<u8> {
    let mut opts = SessionOptions::local("fuzz");
    opts.drain_on_eof = false;
    serve(data, opts)
}

/// Pairing messages from an unauthenticated network peer while a pairing
/// window is open.
pub fn pairing(data: &[u8]) {
    pairing_answers(data);
}

/// What the host answers an unauthenticated network peer.
pub fn pairing_answers(data: &[u8]) -> Vec<u8> {
    let core = host().core();
    if !core.pairing_status().open {
        let _ = core.open_pairing_window(PairingOpenParams {
            ttl_s: Some(3600),
            scopes: None,
            address: Some("127.0.0.1:1".to_owned()),
            replace: None,
        });
    }
    let mut opts = SessionOptions::local("tls");
    opts.principal = Principal::Anonymous;
    opts.drain_on_eof = false;
    opts.channel_binding = Some([7; 32]);
    opts.peer = "192.0.2.1:1".to_owned();
    serve(data, opts)
}

/// The shell grammar and the default command policy.
pub fn shell_policy(data: &[u8]) {
    static POLICY: OnceLock<(Policy, PathBuf)> = OnceLock::new();
    let (policy, cwd) = POLICY.get_or_init(|| {
        let cwd = std::env::temp_dir();
        let policy = Policy::new(&PermissionsConfig::default(), std::slice::from_ref(&cwd))
            .expect("the default policy compiles");
        (policy, cwd)
    });
    let line = String::from_utf8_lossy(data);
    let analysis = shell::analyze(&line);
    let verdict = policy.evaluate(&line, cwd);
    // A line that does not parse never runs without asking.
    if analysis.unparsed.is_some() {
        assert!(
            !matches!(verdict, openwork_host::permissions::Verdict::Allow),
            "an unparsed line was allowed: {line:?}"
        );
    }
}

/// The TOML config file, loaded as the host loads it.
pub fn config_toml(data: &[u8]) {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    let path = FILE.get_or_init(|| {
        let dir = scratch_dir().join("config");
        std::fs::create_dir_all(&dir).expect("a temp dir");
        dir.join("config.toml")
    });
    std::fs::write(path, data).expect("writes the config");
    let _ = Config::load(path);
}
