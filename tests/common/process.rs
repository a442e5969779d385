//! Child processes with deadlines: every wait on a child, and every read of
//! its output, is bounded, and a child that overstays is killed, so that a
//! test fails with a message instead of hanging.
//!
//! Self-contained (std and nix only), so that `netns.rs`, which benchmarks
//! include too, can use it.

#![allow(dead_code)]

use std::borrow::BorrowMut;
use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Runs `command` to completion with no input; kills it and panics after `secs`.
pub fn output_within(command: impl BorrowMut<Command>, secs: u64) -> Output {
    run_within(command, None, false, secs)
}

/// Runs `command` with `input` on stdin, which is then closed; kills it and
/// panics after `secs`.
pub fn output_with_input(command: impl BorrowMut<Command>, input: &[u8], secs: u64) -> Output {
    run_within(command, Some(input), false, secs)
}

/// Like `output_with_input`, but stdin stays open until the child exits: the
/// end must come from the child itself, not from the end of its input.
pub fn output_with_input_held_open(
    command: impl BorrowMut<Command>,
    input: &[u8],
    secs: u64,
) -> Output {
    run_within(command, Some(input), true, secs)
}

fn run_within(
    mut command: impl BorrowMut<Command>,
    input: Option<&[u8]>,
    hold_open: bool,
    secs: u64,
) -> Output {
    let command = command.borrow_mut();
    let shown = format!("{command:?}");
    let mut child = command
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {shown}: {e}"));
    let (exited, wait_exit) = mpsc::channel::<()>();
    let writer = child.stdin.take().map(|mut stdin| {
        let input = input.unwrap_or_default().to_vec();
        std::thread::spawn(move || {
            // A child that exits without reading its input is not an error here.
            let _ = stdin.write_all(&input);
            let _ = stdin.flush();
            if hold_open {
                let _ = wait_exit.recv();
            }
            drop(stdin);
        })
    });
    let timed_out = Arc::new(AtomicBool::new(false));
    let (done, waiting) = mpsc::channel::<()>();
    let watchdog = {
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let timed_out = Arc::clone(&timed_out);
        std::thread::spawn(move || {
            if waiting.recv_timeout(Duration::from_secs(secs)).is_err() {
                timed_out.store(true, Ordering::SeqCst);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
        })
    };
    let output = child.wait_with_output().expect("wait for the child");
    let _ = done.send(());
    let _ = exited.send(());
    let _ = watchdog.join();
    if let Some(writer) = writer {
        let _ = writer.join();
    }
    assert!(
        !timed_out.load(Ordering::SeqCst),
        "{shown} did not finish within {secs} s; it was killed. stderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Waits for `child` to exit; kills it and panics after `secs`.
pub fn wait_within(child: &mut Child, secs: u64) -> ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process {} did not exit within {secs} s", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads `reader` to its end on a thread of its own; panics after `secs`.
/// (On a timeout the thread is left blocked; the test fails anyway.)
pub fn read_to_end_within(mut reader: impl Read + Send + 'static, secs: u64) -> Vec<u8> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let read = reader.read_to_end(&mut bytes).map(|_| bytes);
        let _ = sender.send(read);
    });
    match receiver.recv_timeout(Duration::from_secs(secs)) {
        Ok(read) => read.expect("read the child's output"),
        Err(_) => panic!("the output did not end within {secs} s"),
    }
}

/// Reads exactly `n` bytes from `reader`; panics after `secs`.
pub fn read_exact_within<R: Read + Send + 'static>(
    mut reader: R,
    n: usize,
    secs: u64,
) -> (R, Vec<u8>) {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = vec![0u8; n];
        let read = reader.read_exact(&mut bytes).map(|_| (reader, bytes));
        let _ = sender.send(read);
    });
    match receiver.recv_timeout(Duration::from_secs(secs)) {
        Ok(read) => read.expect("read from the child"),
        Err(_) => panic!("{n} bytes did not come within {secs} s"),
    }
}

/// Runs `command` quietly (no input, output discarded) and returns its exit
/// status, or `None` if it could not start or was killed after `secs`. Never
/// panics: for probes and for clean-up in `Drop`.
pub fn status_within(mut command: impl BorrowMut<Command>, secs: u64) -> Option<ExitStatus> {
    let mut child = command
        .borrow_mut()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}
