//! A real `opencode serve` started by a test or benchmark itself (the host
//! then uses it by URL), isolated in its own HOME and XDG dirs, offline.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The environment that keeps OpenCode off the user's files and the network.
pub fn isolated_env(home: &Path) -> Vec<(String, String)> {
    let dir = |name: &str| home.join(name).display().to_string();
    vec![
        ("HOME".into(), home.display().to_string()),
        ("XDG_CONFIG_HOME".into(), dir("config")),
        ("XDG_DATA_HOME".into(), dir("data")),
        ("XDG_STATE_HOME".into(), dir("state")),
        ("XDG_CACHE_HOME".into(), dir("cache")),
        ("OPENCODE_DISABLE_MODELS_FETCH".into(), "1".into()),
        ("OPENCODE_DISABLE_AUTOUPDATE".into(), "1".into()),
    ]
}

/// The OpenCode binary scripts/test installs, if it is there.
pub fn installed_binary() -> Option<PathBuf> {
    let path = std::env::var_os("OPENWORK_TEST_OPENCODE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("target/test-deps/node_modules/opencode-linux-x64/bin/opencode")
        });
    path.is_file().then_some(path)
}

/// A running `opencode serve` with a password; killed on drop.
pub struct OpencodeServer {
    child: Child,
    pub url: String,
    pub password: String,
    http: reqwest::Client,
}

impl OpencodeServer {
    /// Starts OpenCode in `project` and waits (at most `wait`) until it answers.
    pub async fn start(
        binary: &Path,
        project: &Path,
        home: &Path,
        wait: Duration,
    ) -> OpencodeServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let password = format!("pw-{}-{port}", std::process::id());
        let child = Command::new(binary)
            .args([
                "serve",
                "--hostname",
                "127.0.0.1",
                "--port",
                &port.to_string(),
            ])
            .current_dir(project)
            .envs(isolated_env(home))
            .env("OPENCODE_SERVER_PASSWORD", &password)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start opencode serve");
        let server = OpencodeServer {
            child,
            url: format!("http://127.0.0.1:{port}"),
            password,
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("an HTTP client"),
        };
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if server.get("/global/health").await.is_some() {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("OpenCode did not answer within {wait:?}");
    }

    /// A GET with the server's credentials: the JSON body of a 200, else `None`.
    pub async fn get(&self, path: &str) -> Option<serde_json::Value> {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .basic_auth("opencode", Some(&self.password))
            // A server still starting may take a connection and not answer it.
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json().await.ok()
    }
}

impl Drop for OpencodeServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
