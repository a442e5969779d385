//! The workspace's crate graph holds: a client links no SQLite and no server
//! code. `cargo tree` (offline: it reads Cargo.lock and the crates already
//! fetched) lists what `openwork-client` and `openwork-proto` link.

use std::path::Path;
use std::process::Command;

/// Crates that are the server's alone: storage, HTTP/WebSocket serving, the
/// shell parser of the permission policy, certificate generation, the host.
const SERVER_ONLY: [&str; 9] = [
    "rusqlite",
    "libsqlite3-sys",
    "hyper",
    "hyper-util",
    "tokio-tungstenite",
    "brush-parser",
    "reqwest",
    "rcgen",
    "openwork-host",
];

/// The names of the packages `package` links in normal (not dev or build) use.
fn linked(package: &str) -> Vec<String> {
    let out = Command::new(env!("CARGO"))
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
        .args(["tree", "--offline", "--edges", "normal", "--prefix", "none"])
        .args(["--format", "{p}", "--package", package])
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree -p {package} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    names
}

fn assert_links_no_server_code(package: &str, expected: &[&str]) {
    let names = linked(package);
    for name in expected {
        assert!(
            names.iter().any(|n| n == name),
            "{package} should link {name}; it links: {}",
            names.join(", ")
        );
    }
    let server: Vec<&str> = SERVER_ONLY
        .into_iter()
        .filter(|s| names.iter().any(|n| n == s))
        .collect();
    assert!(
        server.is_empty(),
        "{package} links server-only crates {server:?}; see `cargo tree -p {package} -e normal -i {}`",
        server.first().copied().unwrap_or_default()
    );
}

#[test]
fn the_client_links_the_protocol_and_no_server_code() {
    assert_links_no_server_code(
        "openwork-client",
        &["openwork-client", "openwork-proto", "rustls"],
    );
}

#[test]
fn the_protocol_crate_links_no_server_code() {
    assert_links_no_server_code("openwork-proto", &["openwork-proto", "serde_json"]);
}

#[test]
fn the_host_links_both() {
    let names = linked("openwork-host");
    for name in ["openwork-proto", "openwork-client", "rusqlite"] {
        assert!(
            names.iter().any(|n| n == name),
            "the host should link {name}"
        );
    }
}
