//! The command policy's costs, printed as figures: matching an OpenCode
//! `always` glob that backtracks exponentially in a naive matcher
//! (`*a*a*a*a*b` on 200 `a`s took 9.5 s before), and judging command lines
//! with the shell grammar, typical and adversarial.
//!
//! Run: `cargo bench --bench policy`.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use openwork_host::permissions::{PermissionsConfig, Policy, glob_matches};

/// The median of `rounds` timings of `f`.
fn median(rounds: usize, mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let text = "a".repeat(200);
    let globs = [
        (
            "*a*a*a*a*b on a x200",
            "*a*a*a*a*b".to_owned(),
            text.clone(),
        ),
        ("(*a)x100 b on a x200", "*a".repeat(100) + "b", text.clone()),
        (
            "echo * on a 64 KiB line",
            "echo *".to_owned(),
            format!("echo {}", "x".repeat(64 * 1024)),
        ),
    ];
    for (name, glob, text) in &globs {
        let t = median(21, || {
            black_box(glob_matches(black_box(glob), black_box(text)));
        });
        println!(
            "glob {name:<28} {:>10.3} ms (compile + match)",
            t.as_secs_f64() * 1e3
        );
    }

    let root = PathBuf::from("/tmp");
    let policy = Policy::new(&PermissionsConfig::default(), std::slice::from_ref(&root))
        .expect("the default policy compiles");
    let deep_eval = (0..10).fold("rm -rf ~".to_owned(), |s, _| {
        format!("eval '{}'", s.replace('\'', r"'\''"))
    });
    let lines = [
        ("simple", "ls -la && cargo build".to_owned()),
        (
            "pipeline",
            "git log --oneline | head -n 20 | sed 's/a/b/' > out.txt".to_owned(),
        ),
        (
            "compound",
            "for f in *.rs; do if [ -s \"$f\" ]; then wc -l \"$f\"; fi; done".to_owned(),
        ),
        (
            "wrappers",
            "sudo -u bob env X=1 timeout 5 nice -n 3 xargs -0 rm -rf".to_owned(),
        ),
        ("nested eval x10", deep_eval),
        (
            "200 commands",
            vec!["echo $(date) | tee -a log"; 200].join("; "),
        ),
        (
            "64 KiB word",
            format!("echo '{}'", "x".repeat(64 * 1024 - 8)),
        ),
    ];
    for (name, line) in &lines {
        let t = median(11, || {
            black_box(policy.evaluate(black_box(line), &root));
        });
        println!(
            "policy {name:<22} {:>10.3} ms per line",
            t.as_secs_f64() * 1e3
        );
    }
}
