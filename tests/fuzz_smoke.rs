//! A short, deterministic fuzzing run of every target in `fuzz/targets.rs`:
//! the checked-in corpus, then a fixed number of mutations of it from a
//! fixed seed. Long coverage-guided runs are `scripts/fuzz`.
//!
//! `OPENWORK_FUZZ_SECONDS=N` runs each target for N seconds instead (from a
//! seed taken from the clock), and `OPENWORK_FUZZ_TARGET=name` runs one.

#[path = "../fuzz/targets.rs"]
mod targets;

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Mutations per target in the default run: a few seconds each in a debug build.
fn iterations(target: &str) -> u64 {
    match target {
        "dispatch" | "pairing" => 1000,
        "shell" => 1500,
        "config" => 800,
        _ => 4000,
    }
}

/// Inputs are kept under this size.
const MAX_INPUT: usize = 16 * 1024;

/// Fragments worth splicing in: shell syntax, JSON, TOML, frame headers.
const DICTIONARY: &[&[u8]] = &[
    b"$(",
    b")",
    b"`",
    b"'",
    b"\"",
    b";",
    b"|",
    b"&&",
    b"||",
    b"{ ",
    b" }",
    b"((",
    b"))",
    b"<<EOF\n",
    b"\nEOF\n",
    b"<<<",
    b"<(",
    b">(",
    b"\\",
    b"${X:-",
    b"}",
    b"eval ",
    b"sh -c ",
    b"sudo ",
    b"rm -rf ~",
    b"for x in y; do ",
    b"; done",
    b"if x; then ",
    b"; fi",
    b"case x in ",
    b" esac",
    b"{a,b}",
    b"{1..9}",
    b"$'\\x41'",
    b"\n",
    b"\r\n",
    b"Content-Length: ",
    b"Content-Length: 99999999999\r\n\r\n",
    b"\r\n\r\n",
    b"{\"jsonrpc\":\"2.0\",",
    b"\"id\":",
    b"\"method\":",
    b"\"params\":",
    b"[",
    b"]",
    b"{",
    b"null",
    b"true",
    b"-1",
    b"1e999",
    b"18446744073709551616",
    b"\"\\u0000\"",
    b"\"\\ud800\"",
    b"=",
    b"[[",
    b"]]",
    b"[permissions]\n",
    b"[[permissions.rules]]\n",
    b"\"\"\"",
    b"'''",
    b"inf",
    b"nan",
    b"1979-05-27T07:32:00Z",
];

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir(target))
        .unwrap_or_else(|e| panic!("fuzz/corpus/{target}: {e}"))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

fn mutate(rng: &mut StdRng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut data = seeds[rng.random_range(0..seeds.len())].clone();
    for _ in 0..rng.random_range(1..=4) {
        let len = data.len();
        match rng.random_range(0..7) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                data[i] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.random_range(0..len);
                data[i] = rng.random();
            }
            2 if len > 0 => {
                let a = rng.random_range(0..len);
                let b = rng.random_range(a..=len.min(a + 64));
                data.drain(a..b);
            }
            3 if len > 0 => {
                let a = rng.random_range(0..len);
                let b = rng.random_range(a..=len.min(a + 64));
                let piece = data[a..b].to_vec();
                let at = rng.random_range(0..=len);
                data.splice(at..at, piece);
            }
            4 => {
                let other = &seeds[rng.random_range(0..seeds.len())];
                let at = rng.random_range(0..=len);
                let from = rng.random_range(0..=other.len());
                data.splice(at..at, other[from..].iter().copied());
            }
            _ => {
                let word = DICTIONARY[rng.random_range(0..DICTIONARY.len())];
                let at = rng.random_range(0..=len);
                data.splice(at..at, word.iter().copied());
            }
        }
        data.truncate(MAX_INPUT);
    }
    data
}

fn printable(data: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(data))
}

/// Runs one target; returns the number of executions.
fn run(name: &str, target: targets::Target, budget: Option<Duration>, seed: u64) -> u64 {
    let seeds = corpus(name);
    assert!(!seeds.is_empty(), "fuzz/corpus/{name} is empty");
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let mut executions = 0u64;
    let mut check = |input: &[u8]| {
        if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(|| target(input))) {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-crashes");
            let _ = std::fs::create_dir_all(&dir);
            let file = dir.join(format!("{name}-{seed}-{executions}"));
            let _ = std::fs::write(&file, input);
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!(
                "fuzz target `{name}` failed on input {} (saved to {}): {why}",
                printable(input),
                file.display()
            );
        }
        executions += 1;
    };
    for input in &seeds {
        check(input);
    }
    let mut i = 0;
    loop {
        match budget {
            Some(budget) if started.elapsed() >= budget => break,
            None if i >= iterations(name) => break,
            _ => {}
        }
        let input = mutate(&mut rng, &seeds);
        check(&input);
        i += 1;
    }
    println!(
        "fuzz {name}: {executions} executions in {:.1} s, none failed",
        started.elapsed().as_secs_f64()
    );
    executions
}

#[test]
fn every_target_survives_its_corpus_and_mutations_of_it() {
    let only = std::env::var("OPENWORK_FUZZ_TARGET").ok();
    let budget = std::env::var("OPENWORK_FUZZ_SECONDS")
        .ok()
        .map(|s| Duration::from_secs(s.parse().expect("OPENWORK_FUZZ_SECONDS is a number")));
    let seed = match budget {
        Some(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        None => 0x0e9_c0de,
    };
    let mut ran = 0;
    for (name, target) in targets::TARGETS {
        if only.as_deref().is_some_and(|o| o != *name) {
            continue;
        }
        assert!(run(name, *target, budget, seed) > 0);
        ran += 1;
    }
    assert!(ran > 0, "no fuzz target is named {only:?}");
    if std::env::var_os("OPENWORK_FUZZ_DIR").is_none() {
        let _ = std::fs::remove_dir_all(targets::scratch_dir());
    }
}

/// The host targets reach the host: its answers come back.
#[test]
fn the_host_targets_get_answers() {
    let ping = std::fs::read(corpus_dir("dispatch").join("ping")).unwrap();
    let answers = String::from_utf8(targets::dispatch_answers(&ping)).unwrap();
    assert!(answers.contains(r#""id":1,"result":{}"#), "{answers}");
    let begin = std::fs::read(corpus_dir("pairing").join("begin")).unwrap();
    let answers = String::from_utf8(targets::pairing_answers(&begin)).unwrap();
    assert!(answers.contains(r#""id":1"#), "{answers}");
}
