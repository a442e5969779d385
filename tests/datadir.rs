//! The data dir as the host finds it: one it creates is owner-only; an
//! existing one keeps its mode and is refused when others may write to it or
//! it belongs to someone else; and `status` run by another user says why it
//! cannot tell, not that the host is down. Tests run as root; another user
//! is `nobody` through `setpriv`.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};

use common::*;

const NOBODY: u32 = 65534;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `serve` on `data`; a host that starts would run until killed, so a
/// refusal must come at once.
fn serve(data: &Path) -> Output {
    let mut command = Command::new(bin());
    command.arg("--data-dir").arg(data).args([
        "serve",
        "--no-mdns",
        "--listen",
        "none",
        "--log",
        "warn",
    ]);
    output_within(command, 15)
}

/// Runs the binary as `nobody`.
fn as_nobody(args: &[&str], data: &Path) -> Output {
    let mut command = Command::new("setpriv");
    command
        .args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            bin(),
            "--data-dir",
        ])
        .arg(data)
        .args(args);
    output_within(command, 15)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_data_dir_the_host_creates_is_owner_only_and_an_existing_one_keeps_its_mode() {
    let tmp = tempfile::tempdir().unwrap();
    // Created (with a missing parent): 0700.
    let created = tmp.path().join("new/data");
    let out = output_with_input(
        Command::new(bin())
            .arg("--data-dir")
            .arg(&created)
            .arg("stdio"),
        b"",
        20,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(mode(&created), 0o700);
    // Existing, private to its owner but readable by others: left as it is.
    let existing = tmp.path().join("existing");
    std::fs::create_dir(&existing).unwrap();
    chmod(&existing, 0o750);
    let out = output_with_input(
        Command::new(bin())
            .arg("--data-dir")
            .arg(&existing)
            .arg("stdio"),
        b"",
        20,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        mode(&existing),
        0o750,
        "an existing dir's mode is not changed"
    );
    assert!(existing.join("host.db").exists());
}

#[test]
fn a_shared_dir_like_tmp_is_refused_with_a_dir_of_ones_own_suggested_and_keeps_its_sticky_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let shared = tmp.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    chmod(&shared, 0o1777);
    let out = serve(&shared);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("is writable by other users (mode 1777)"),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "--data-dir {}",
            shared.join("openwork-host").display()
        )),
        "the fix names a dir of one's own: {err}"
    );
    assert_eq!(mode(&shared), 0o1777, "the sticky bit and mode stay");
    assert!(
        std::fs::read_dir(&shared).unwrap().next().is_none(),
        "nothing was written into it"
    );
}

#[test]
fn a_dir_writable_by_its_group_is_refused_with_the_chmod_that_fixes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    chmod(&data, 0o770);
    let out = serve(&data);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("writable by other users (mode 770)"), "{err}");
    assert!(
        err.contains(&format!("chmod go-w {}", data.display())),
        "{err}"
    );
    assert_eq!(mode(&data), 0o770);
}

#[test]
fn a_data_dir_owned_by_someone_else_is_refused_naming_its_owner_not_as_a_failed_create() {
    let tmp = tempfile::tempdir().unwrap();
    chmod(tmp.path(), 0o755);
    // Root on nobody's dir.
    let theirs = tmp.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    chmod(&theirs, 0o700);
    nix::unistd::chown(&theirs, Some(NOBODY.into()), Some(NOBODY.into())).unwrap();
    let out = serve(&theirs);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("belongs to user nobody (65534), not to you (user root (0))"),
        "{err}"
    );
    assert!(err.contains("run the host as user nobody (65534)"), "{err}");
    assert_eq!(std::fs::metadata(&theirs).unwrap().uid(), NOBODY);

    // Nobody on root's dir: the cause is the owner, not a failed create.
    let roots = tmp.path().join("roots");
    std::fs::create_dir(&roots).unwrap();
    chmod(&roots, 0o700);
    let out = as_nobody(&["serve", "--no-mdns", "--listen", "none"], &roots);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(!err.contains("cannot create"), "{err}");
    assert!(
        err.contains("belongs to user root (0), not to you (user nobody (65534))"),
        "{err}"
    );
    assert_eq!(mode(&roots), 0o700);
}

#[tokio::test]
async fn status_run_by_another_user_says_it_may_not_connect_and_who_may_not_that_the_host_is_down()
{
    let host = TestHost::started();
    // Let nobody reach the data dir's name (not its inside).
    chmod(host.dir.path(), 0o755);
    let out = as_nobody(&["status"], &host.data);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}{}", stderr(&out));
    assert!(!stdout.contains("not running"), "{stdout}");
    assert!(stdout.contains("Permission denied"), "{stdout}");
    assert!(
        stdout.contains("the data dir belongs to user root (0)"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "sudo -u root openwork-host status --data-dir {}",
            host.data.display()
        )),
        "{stdout}"
    );
    let out = as_nobody(&["status", "--json"], &host.data);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["status"], "unknown", "{json}");
    // The host is fine, and its owner still sees it running.
    let mut client = host.connect().await;
    let health: serde_json::Value = within(10, client.call("health.get", serde_json::json!({})))
        .await
        .unwrap();
    assert_ne!(health["status"], "error", "{health}");
}
