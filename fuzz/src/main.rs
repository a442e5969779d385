//! One AFL++ harness for every fuzz target: `OPENWORK_FUZZ_TARGET` names
//! the target (`codec`, `message`, `dispatch`, `pairing`, `shell`, `config`),
//! and AFL feeds it inputs in persistent mode. Built and run by `scripts/fuzz`.

#[path = "../targets.rs"]
mod targets;

fn main() {
    let name = std::env::var("OPENWORK_FUZZ_TARGET").unwrap_or_default();
    let Some((_, target)) = targets::TARGETS.iter().find(|(n, _)| *n == name) else {
        let names: Vec<&str> = targets::TARGETS.iter().map(|(n, _)| *n).collect();
        eprintln!(
            "set OPENWORK_FUZZ_TARGET to one of: {}",
            names.join(", ")
        );
        std::process::exit(2);
    };
    // Without afl's abort-on-panic hook: the host catches a parser's panic
    // and treats the line as unparsed (asks), which is not a crash. A panic
    // that escapes a target is still caught by afl and aborts, so AFL still
    // reports every real crash.
    afl::fuzz_nohook!(|data: &[u8]| {
        target(data);
    });
}
