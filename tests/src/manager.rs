//! A `ferry serve` for tests that boot agents: initialised in a temporary
//! directory, listening on a free loopback port (which QEMU user
//! networking shows guests as `10.0.2.2:PORT`), killed when dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::ferry_bin;

/// A running manager.
pub struct Manager {
    dir: tempfile::TempDir,
    library: PathBuf,
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The enrolment token agents get.
    pub enroll_token: String,
    /// `sha256:<hex>` of its CA.
    pub ca_fingerprint: String,
}

fn value_after<'a>(text: &'a str, label: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(label))
        .map(str::trim)
        .unwrap_or_else(|| panic!("`ferry serve --init` printed no {label:?}:\n{text}"))
}

impl Manager {
    /// `ferry serve --init`, then `ferry serve` on a free port, with its
    /// image library in the server directory.
    pub fn start() -> Manager {
        Manager::start_with_library(None)
    }

    /// [`Manager::start`] serving the library at `library` (kept when the
    /// manager stops) instead of one in its temporary directory.
    pub fn start_with_library(library: Option<&Path>) -> Manager {
        let dir = tempfile::tempdir().expect("tempdir");
        let library = library.map_or_else(|| dir.path().join("library"), Path::to_path_buf);
        let init = Command::new(ferry_bin())
            .args(["serve", "--init", "--dir"])
            .arg(dir.path().join("srv"))
            .output()
            .expect("running ferry serve --init");
        let out = String::from_utf8_lossy(&init.stdout).into_owned();
        assert!(init.status.success(), "ferry serve --init failed: {out}");
        let enroll_token = value_after(&out, "enrollment token:").to_string();
        let ca_fingerprint = value_after(&out, "CA fingerprint:").to_string();
        let mut child = Command::new(ferry_bin())
            .arg("--library")
            .arg(&library)
            .args(["serve", "--listen", "127.0.0.1:0", "--dir"])
            .arg(dir.path().join("srv"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting ferry serve");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line
                    .split("listening on https://")
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next())
                {
                    let _ = tx.send(addr.to_string());
                }
                eprintln!("[ferry serve] {line}");
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("ferry serve did not say where it listens within 30 s");
        let port = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {addr:?}"));
        Manager {
            dir,
            library,
            child,
            port,
            enroll_token,
            ca_fingerprint,
        }
    }

    /// The server directory (CA, tokens), for `--dir` of operator commands.
    pub fn server_dir(&self) -> PathBuf {
        self.dir.path().join("srv")
    }

    /// Its image library directory.
    pub fn library(&self) -> PathBuf {
        self.library.clone()
    }

    /// Its URL from the host.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The kernel command line that points a QEMU guest's agent here.
    pub fn guest_cmdline(&self) -> String {
        format!(
            "ferry.server=https://10.0.2.2:{} ferry.token={} ferry.ca={}",
            self.port, self.enroll_token, self.ca_fingerprint
        )
    }

    /// An operator's `ferry` command aimed at this server.
    pub fn ferry(&self) -> Command {
        let mut c = Command::new(ferry_bin());
        c.env("FERRY_SERVER", self.url())
            .env("FERRY_SERVER_DIR", self.server_dir());
        c
    }

    /// `ferry agents --json`.
    pub fn agents(&self) -> Vec<serde_json::Value> {
        let out = self
            .ferry()
            .args(["agents", "--json"])
            .output()
            .expect("running ferry agents");
        assert!(
            out.status.success(),
            "ferry agents: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("ferry agents --json prints JSON")
    }

    /// A file of agent `id`'s mailbox, read with the operator token over
    /// HTTPS by curl (the CA is the only one trusted).
    pub fn mailbox_file(&self, id: &str, file: &str) -> Option<serde_json::Value> {
        let token = std::fs::read_to_string(self.server_dir().join("operator.token"))
            .expect("operator token");
        let out = Command::new("curl")
            .args(["-sf", "--cacert"])
            .arg(self.server_dir().join("ca.pem"))
            .arg("-H")
            .arg(format!("Authorization: Bearer {}", token.trim()))
            .arg(format!("{}/v1/mailboxes/{id}/{file}", self.url()))
            .output()
            .expect("running curl");
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }

    /// A file of agent `id`'s mailbox read from the server's store on
    /// disk: no network traffic (for tests that count it).
    pub fn mailbox_file_on_disk(&self, id: &str, file: &str) -> Option<serde_json::Value> {
        let path = self
            .server_dir()
            .join("store/mailboxes")
            .join(id)
            .join(file);
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    /// `curl` against the server's API with the operator token: `path`
    /// (`/v1/jobs`), with `body` POSTed as JSON when given. The answer's
    /// JSON, or the HTTP error as text.
    pub fn api(
        &self,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, String> {
        let token = std::fs::read_to_string(self.server_dir().join("operator.token"))
            .expect("operator token");
        let mut c = Command::new("curl");
        c.args(["-sS", "--fail-with-body", "--cacert"])
            .arg(self.server_dir().join("ca.pem"))
            .arg("-H")
            .arg(format!("Authorization: Bearer {}", token.trim()));
        if let Some(b) = body {
            c.args(["-H", "Content-Type: application/json", "--data-binary"])
                .arg(b.to_string());
        }
        let out = c
            .arg(format!("{}{path}", self.url()))
            .output()
            .expect("running curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            return Err(format!(
                "{path}: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        serde_json::from_str(&text).map_err(|e| format!("{path}: {e}: {text}"))
    }

    /// Starts a job of `steps` (the mailbox's actions as JSON) on agent
    /// `id`; returns the job's id.
    pub fn create_job(&self, id: &str, steps: serde_json::Value) -> String {
        let job = self
            .api(
                "/v1/jobs",
                Some(&serde_json::json!({ "agent": id, "steps": steps })),
            )
            .unwrap_or_else(|e| panic!("creating a job on {id}: {e}"));
        job["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no job id in {job}"))
            .to_string()
    }

    /// Polls job `id` until it is no longer running; returns its view.
    /// Panics after `timeout`.
    pub fn wait_for_job(&self, id: &str, timeout: Duration) -> serde_json::Value {
        let start = Instant::now();
        loop {
            match self.api(&format!("/v1/jobs/{id}"), None) {
                Ok(j) if j["state"] != "running" => return j,
                Ok(j) => assert!(
                    start.elapsed() < timeout,
                    "job {id} still running after {timeout:?}: {j}"
                ),
                Err(e) => assert!(
                    start.elapsed() < timeout,
                    "job {id} unreadable for {timeout:?}: {e}"
                ),
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// The ids of the agents whose identity lists `mac`.
    pub fn agents_with_mac(&self, mac: &str) -> Vec<String> {
        self.agents()
            .iter()
            .filter(|a| {
                a["identity"]["macs"]
                    .as_array()
                    .is_some_and(|m| m.iter().any(|v| v.as_str() == Some(mac)))
            })
            .filter_map(|a| a["id"].as_str().map(str::to_string))
            .collect()
    }

    /// Polls (every 250 ms) until an agent whose identity lists `mac` has
    /// written a heartbeat; returns its id and when the heartbeat was
    /// first seen. Panics after `timeout`.
    pub fn wait_for_heartbeat(&self, mac: &str, timeout: Duration) -> (String, Instant) {
        let start = Instant::now();
        loop {
            for id in self.agents_with_mac(mac) {
                if self.mailbox_file(&id, "heartbeat.json").is_some() {
                    return (id, Instant::now());
                }
            }
            assert!(
                start.elapsed() < timeout,
                "no heartbeat from an agent with MAC {mac} at {} within {timeout:?}",
                self.url()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Waits until an agent whose identity lists `mac` has written a status
    /// holding a survey; returns its id and status.
    pub fn wait_for_agent(&self, mac: &str, timeout: Duration) -> (String, serde_json::Value) {
        let start = Instant::now();
        loop {
            for id in self.agents_with_mac(mac) {
                if let Some(st) = self.mailbox_file(&id, "status.json") {
                    if st.get("survey").is_some() {
                        return (id, st);
                    }
                }
            }
            assert!(
                start.elapsed() < timeout,
                "no agent with MAC {mac} reported a survey to {} within {timeout:?}",
                self.url()
            );
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// The path of a file in the server directory.
    pub fn file(&self, name: &str) -> PathBuf {
        Path::new(&self.server_dir()).join(name)
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
