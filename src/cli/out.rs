//! Standard output for every command: a reader that goes away (`| head`)
//! ends the output quietly instead of a panic, and the command still exits
//! with its own status.
//!
//! `println!` panics when stdout is a closed pipe (Rust ignores SIGPIPE, so
//! the write fails with EPIPE); the commands print through `outln!` and
//! `out!` instead, and loops that print a lot stop once `closed()` says so.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes `text` to stdout and flushes; once a write fails (the reader
/// went away), nothing more is written.
pub fn write(text: &str) {
    write_bytes(text.as_bytes());
}

/// Like `write`, for bytes that need not be UTF-8 (a task's output).
pub fn write_bytes(bytes: &[u8]) {
    if CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(bytes).and_then(|()| out.flush()) {
        CLOSED.store(true, Ordering::Relaxed);
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("openwork-host: cannot write to stdout: {e}");
        }
    }
}

/// Whether stdout's reader went away: there is no point producing more.
pub fn closed() -> bool {
    CLOSED.load(Ordering::Relaxed)
}

/// `println!` that ends quietly on a closed stdout.
macro_rules! outln {
    () => { $crate::cli::out::write("\n") };
    ($($arg:tt)*) => {{
        let mut text = format!($($arg)*);
        text.push('\n');
        $crate::cli::out::write(&text)
    }};
}

/// `print!` that ends quietly on a closed stdout.
macro_rules! out {
    ($($arg:tt)*) => { $crate::cli::out::write(&format!($($arg)*)) };
}

pub(crate) use {out, outln};
