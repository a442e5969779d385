//! `schema/` is generated from the method table: the checked-in files must be
//! exactly what the code generates now, and the command that writes them works.

mod common;

use std::path::Path;
use std::process::Command;

use common::{bin, output_within};

#[test]
fn checked_in_schema_matches_the_rust_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema");
    let problems = openwork_host::schema::check(&dir).expect("read schema/");
    assert!(
        problems.is_empty(),
        "schema/ is out of date with the Rust types:\n{}\nrun `scripts/codegen` (or `cargo run -- schema --out schema`) and commit the result",
        problems.join("\n")
    );
}

#[test]
fn schema_command_writes_checks_and_repairs_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("schema");
    let check = || {
        output_within(
            Command::new(bin())
                .args(["schema", "--check", "--out"])
                .arg(&out),
            60,
        )
    };
    let missing = check();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("openrpc.json is missing"));

    let written = output_within(Command::new(bin()).args(["schema", "--out"]).arg(&out), 60);
    assert!(written.status.success());
    assert!(check().status.success());

    // A hand edit and a stale type file are both reported, then repaired.
    let doc = out.join("openrpc.json");
    let text = std::fs::read_to_string(&doc).unwrap();
    std::fs::write(&doc, text.replacen("task.run", "task.runn", 1)).unwrap();
    std::fs::write(out.join("types/Gone.json"), "{}").unwrap();
    let drift = check();
    assert!(!drift.status.success());
    let stderr = String::from_utf8_lossy(&drift.stderr);
    assert!(stderr.contains("openrpc.json differs"), "{stderr}");
    assert!(stderr.contains("task.runn"), "{stderr}");
    assert!(
        stderr.contains("Gone.json is no longer generated"),
        "{stderr}"
    );
    assert!(stderr.contains("scripts/codegen"), "{stderr}");

    let again = output_within(Command::new(bin()).args(["schema", "--out"]).arg(&out), 60);
    assert!(again.status.success());
    assert!(check().status.success());
    assert!(!out.join("types/Gone.json").exists());
}
