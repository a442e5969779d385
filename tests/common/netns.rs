//! Private networks for mDNS tests: network namespaces this process makes
//! (`ip netns`), joined by a veth pair, removed on drop even after a panic.
//! mDNS never runs in the machine's own namespace.

#![allow(dead_code)]

// The crate that includes this file has `process` (tests/common/process.rs)
// at its root.
use crate::process;

use std::process::{Child, Command};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The host side's IPv4 address on a `Lan`.
pub const HOST_IP: &str = "10.250.0.1";
/// The client side's IPv4 address on a `Lan`.
pub const CLIENT_IP: &str = "10.250.0.2";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Whether this process can make network namespaces. Without them a test
/// is skipped with a message, except under `CI=true`, where it fails.
pub fn namespaces_available(test: &str) -> bool {
    let why = if !nix::unistd::geteuid().is_root() {
        "it needs root to make network namespaces"
    } else if !process::status_within(Command::new("ip").arg("-V"), 10).is_some_and(|s| s.success())
    {
        "it needs `ip` (iproute2)"
    } else {
        return true;
    };
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: {why}, and CI must run every mDNS test");
    }
    eprintln!("skipping {test}: {why}");
    false
}

fn ip(args: &[&str]) {
    let out = process::output_within(Command::new("ip").args(args), 20);
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Namespaces and the link between them.
pub struct Lan {
    /// Where the host runs.
    pub host_ns: String,
    /// Where clients run (empty for a lone namespace).
    pub client_ns: String,
    /// The interface names in each.
    pub host_if: String,
    pub client_if: String,
}

impl Lan {
    fn names() -> (String, String, String, String) {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}x{n}", std::process::id());
        // Interface names must stay under 16 bytes.
        (
            format!("owt-{tag}-h"),
            format!("owt-{tag}-c"),
            format!("o{tag}h"),
            format!("o{tag}c"),
        )
    }

    /// Two namespaces joined by a veth pair: the host at 10.250.0.1/30, the
    /// client at 10.250.0.2/30, each with IPv6 link-local addresses too.
    pub fn new() -> Lan {
        Self::make(true)
    }

    /// Like `new`, with IPv6 link-local addresses only: no IPv4 at all.
    pub fn link_local_only() -> Lan {
        Self::make(false)
    }

    fn make(ipv4: bool) -> Lan {
        let (host_ns, client_ns, host_if, client_if) = Self::names();
        let lan = Lan {
            host_ns,
            client_ns,
            host_if,
            client_if,
        };
        ip(&["netns", "add", &lan.host_ns]);
        ip(&["netns", "add", &lan.client_ns]);
        ip(&[
            "link",
            "add",
            &lan.host_if,
            "netns",
            &lan.host_ns,
            "type",
            "veth",
            "peer",
            "name",
            &lan.client_if,
            "netns",
            &lan.client_ns,
        ]);
        for (ns, ifname, address) in [
            (&lan.host_ns, &lan.host_if, HOST_IP),
            (&lan.client_ns, &lan.client_if, CLIENT_IP),
        ] {
            // Link-local addresses are usable at once, not after duplicate
            // address detection (about 2 s): no one else is on this link.
            let dad = format!("echo 0 > /proc/sys/net/ipv6/conf/{ifname}/accept_dad");
            let out = process::output_within(
                Command::new("ip").args(["netns", "exec", ns, "sh", "-c", &dad]),
                20,
            );
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            if ipv4 {
                ip(&[
                    "-n",
                    ns,
                    "addr",
                    "add",
                    &format!("{address}/30"),
                    "dev",
                    ifname,
                ]);
            }
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "link", "set", ifname, "up"]);
        }
        // The kernel reports carrier, and then makes link-local addresses, a
        // moment after both ends are up; mDNS only uses interfaces that have both.
        for (ns, ifname) in [
            (&lan.host_ns, &lan.host_if),
            (&lan.client_ns, &lan.client_if),
        ] {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let link = process::output_within(
                    Command::new("ip").args(["-n", ns, "-o", "link", "show", "dev", ifname]),
                    20,
                );
                let addr = process::output_within(
                    Command::new("ip").args(["-n", ns, "-6", "-o", "addr", "show", "dev", ifname]),
                    20,
                );
                let addr = String::from_utf8_lossy(&addr.stdout);
                if String::from_utf8_lossy(&link.stdout).contains("state UP")
                    && addr.contains("fe80:")
                    && !addr.contains("tentative")
                {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{ifname} in {ns} did not come up with a link-local address in 10 s"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        lan
    }

    /// One namespace with only loopback up: no interface can carry mDNS.
    pub fn loopback_only() -> Lan {
        let (host_ns, ..) = Self::names();
        ip(&["netns", "add", &host_ns]);
        ip(&["-n", &host_ns, "link", "set", "lo", "up"]);
        Lan {
            host_ns,
            client_ns: String::new(),
            host_if: String::new(),
            client_if: String::new(),
        }
    }

    /// A command run inside namespace `ns`.
    pub fn command(ns: &str, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", ns, program]);
        command
    }

    /// The IPv6 link-local address of the host's interface.
    pub fn host_link_local(&self) -> String {
        let out = process::output_within(
            Command::new("ip").args([
                "-n",
                &self.host_ns,
                "-6",
                "-o",
                "addr",
                "show",
                "dev",
                &self.host_if,
            ]),
            20,
        );
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .find_map(|w| w.strip_suffix("/64").filter(|a| a.starts_with("fe80:")))
            .unwrap_or_else(|| panic!("no link-local address in {text}"))
            .to_owned()
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth pair, and so the pair.
        for ns in [&self.host_ns, &self.client_ns] {
            if !ns.is_empty() {
                let _ = process::status_within(Command::new("ip").args(["netns", "del", ns]), 10);
            }
        }
    }
}

/// A child process killed (and reaped) when dropped.
pub struct Running(pub Option<Child>);

impl Running {
    pub fn pid(&self) -> u32 {
        self.0.as_ref().expect("running").id()
    }

    /// SIGTERM, then waits up to `secs` for the exit.
    pub fn terminate(&mut self, secs: u64) -> std::process::ExitStatus {
        let mut child = self.0.take().expect("running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("process {} did not stop within {secs} s of SIGTERM", pid);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
