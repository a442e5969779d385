//! `openwork-host service`: the systemd user unit and the launchd agent it
//! writes, checked by the tools that read them (`systemd-analyze verify`,
//! Python's plistlib), and what it says when no user service manager
//! answers. Nothing is enabled on this machine: the unit goes to a
//! temporary directory, and the one test that lets `systemctl --user` run
//! gives it a runtime dir with no manager behind it.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Whether a tool the test needs is here; under CI=true a missing one fails.
fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{tool} is needed under CI=true"
        );
        eprintln!("skipped: {tool} is not installed");
    }
    found
}

fn service(unit_dir: &Path) -> Command {
    let mut command = Command::new(bin());
    command.env("OPENWORK_SERVICE_DIR", unit_dir);
    command
}

#[test]
fn the_systemd_unit_runs_this_binary_restarts_on_failure_and_passes_systemd_analyze() {
    let units = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    // --print shows the unit and writes nothing.
    let printed = output_within(
        service(units.path())
            .args(["--data-dir"])
            .arg(data.path())
            .args(["service", "install", "--print", "--manager", "systemd"]),
        30,
    );
    assert!(printed.status.success(), "{}", text(&printed.stderr));
    let unit = text(&printed.stdout);
    assert_eq!(std::fs::read_dir(units.path()).unwrap().count(), 0);
    let exec = format!(
        "ExecStart={} --data-dir {} serve",
        bin(),
        data.path().display()
    );
    for line in [
        exec.as_str(),
        "Restart=on-failure",
        "StandardError=journal",
        "WantedBy=default.target",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line} in\n{unit}");
    }

    // Installed elsewhere than where systemd looks: written, not enabled.
    let installed = output_within(
        service(units.path())
            .args(["--data-dir"])
            .arg(data.path())
            .args(["service", "install", "--manager", "systemd"]),
        30,
    );
    assert!(installed.status.success(), "{}", text(&installed.stderr));
    assert!(
        text(&installed.stdout).contains("Not enabled or started"),
        "{}",
        text(&installed.stdout)
    );
    let file = units.path().join("openwork-host.service");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), unit);

    if have("systemd-analyze") {
        let runtime = tempfile::tempdir().unwrap();
        let verified = output_within(
            Command::new("systemd-analyze")
                .env("XDG_RUNTIME_DIR", runtime.path())
                .args(["--user", "verify"])
                .arg(&file),
            60,
        );
        assert!(
            verified.status.success() && verified.stderr.is_empty(),
            "systemd-analyze verify: {}",
            text(&verified.stderr)
        );
    }

    let status = output_within(
        service(units.path()).args(["service", "status", "--manager", "systemd"]),
        30,
    );
    assert_eq!(status.status.code(), Some(3));
    assert!(text(&status.stdout).contains("installed: "));
    let removed = output_within(
        service(units.path()).args(["service", "uninstall", "--manager", "systemd"]),
        30,
    );
    assert!(removed.status.success(), "{}", text(&removed.stderr));
    assert!(!file.exists());
    let status = output_within(
        service(units.path()).args(["service", "status", "--manager", "systemd"]),
        30,
    );
    assert_eq!(status.status.code(), Some(3));
    assert!(text(&status.stdout).contains("not installed"));
}

#[test]
fn the_launchd_agent_is_a_valid_property_list_that_keeps_the_host_alive() {
    let agents = tempfile::tempdir().unwrap();
    let installed = output_within(
        service(agents.path()).args(["service", "install", "--manager", "launchd"]),
        30,
    );
    assert!(installed.status.success(), "{}", text(&installed.stderr));
    let file = agents.path().join("dev.openwork.host.plist");
    assert!(file.exists());
    if !have("python3") {
        return;
    }
    // An independent reader: Python's plistlib.
    let read = output_within(
        Command::new("python3")
            .arg("-c")
            .arg(
                "import json, plistlib, sys\n\
             with open(sys.argv[1], 'rb') as f: p = plistlib.load(f)\n\
             print(json.dumps(p))",
            )
            .arg(&file),
        30,
    );
    assert!(read.status.success(), "{}", text(&read.stderr));
    let plist: serde_json::Value = serde_json::from_slice(&read.stdout).unwrap();
    assert_eq!(plist["Label"], "dev.openwork.host");
    assert_eq!(
        plist["ProgramArguments"],
        serde_json::json!([bin(), "serve"])
    );
    assert_eq!(plist["RunAtLoad"], true);
    assert_eq!(plist["KeepAlive"]["SuccessfulExit"], false);
    assert!(
        plist["StandardErrorPath"]
            .as_str()
            .is_some_and(|p| p.ends_with("Library/Logs/openwork-host/serve.log")),
        "{plist}"
    );
}

#[test]
fn without_a_user_service_manager_install_writes_the_unit_and_says_what_to_do() {
    // The unit's default place, under a home of the test's own; and a
    // runtime dir with no manager (nor bus) behind it: `systemctl --user`
    // reaches nothing here, whatever this machine runs.
    let home = tempfile::tempdir().unwrap();
    let runtime = home.path().join("run");
    std::fs::create_dir(&runtime).unwrap();
    let out = output_within(
        Command::new(bin())
            .env_remove("OPENWORK_SERVICE_DIR")
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .env("HOME", home.path())
            .env("XDG_CONFIG_HOME", home.path().join("config"))
            .env("XDG_RUNTIME_DIR", &runtime)
            .args(["service", "install", "--manager", "systemd"]),
        60,
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let unit = home
        .path()
        .join("config/systemd/user/openwork-host.service");
    assert!(unit.exists(), "{stderr}");
    assert!(
        stderr.contains("There is no systemd user manager for this session"),
        "{stderr}"
    );
    assert!(
        stderr.contains("systemctl --user enable --now openwork-host.service"),
        "{stderr}"
    );
}
