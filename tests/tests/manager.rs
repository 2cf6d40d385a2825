//! The manager: `ferry serve` over real HTTPS (checked with curl), jobs
//! that survive a server restart, heartbeat expiry, replayed commands, two
//! managers over one S3 bucket (moto's server), and an agent in a network
//! namespace that may only dial out to the server.
//!
//! Agents are simulated with the agent crate's own `Mailbox` over its
//! `HttpsTransport` (the PID-1 agent is another issue's work): each runs
//! `shell` commands with /bin/sh and records every execution, so the tests
//! can assert that each command ran exactly once.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use agent::mailbox::https::Trust;
use agent::mailbox::{
    connect, Action, AgentState, MachineIdentity, Mailbox, MailboxId, Progress, Status, Transport,
    PROTOCOL_VERSION,
};
use ferry_tests::{ferry_bin, is_root};
use manager::client::Client;
use manager::jobs::{JobState, JobView};

/// A running `ferry serve`; killed when dropped.
struct Serve {
    child: Child,
    url: String,
}

impl Serve {
    fn start(dir: &Path, listen: &str, store: Option<&str>) -> Serve {
        let mut cmd = Command::new(ferry_bin());
        cmd.arg("serve")
            .arg("--dir")
            .arg(dir)
            .args(["--listen", listen])
            .env("FERRY_LOG", "info")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .stderr(Stdio::piped());
        if let Some(s) = store {
            cmd.args(["--store", s]);
        }
        let mut child = cmd.spawn().expect("spawn ferry serve");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let url = rest.split_whitespace().next().unwrap_or("").to_string();
                    let _ = tx.send(url);
                }
                eprintln!("[serve] {line}");
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("ferry serve did not start listening within 20 s");
        Serve { child, url }
    }

    fn port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port in the URL")
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn init_dir(dir: &Path, sans: &[&str]) {
    let mut c = Command::new(ferry_bin());
    c.arg("serve").arg("--init").arg("--dir").arg(dir);
    for s in sans {
        c.args(["--san", s]);
    }
    let out = c.output().expect("ferry serve --init");
    assert!(
        out.status.success(),
        "ferry serve --init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("CA fingerprint: sha256:"), "{text}");
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name))
        .expect("server file")
        .trim()
        .to_string()
}

/// curl with the server's CA only; returns (status, body).
fn curl(dir: &Path, args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(dir.join("ca.pem"))
        .args(["-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn bearer(t: &str) -> String {
    format!("Authorization: Bearer {t}")
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn trust(dir: &Path) -> Trust {
    Trust::parse(&dir.join("ca.pem").display().to_string()).expect("CA")
}

fn operator(dir: &Path, url: &str) -> Client {
    Client::new(url, &read(dir, "operator.token"), &trust(dir)).expect("client")
}

/// A simulated agent: a thread running the agent side of a mailbox.
struct SimAgent {
    stop: Arc<AtomicBool>,
    /// Every command it executed: (seq, shell command).
    runs: Arc<Mutex<Vec<(u64, String)>>>,
    handle: Option<JoinHandle<()>>,
}

fn status(state: AgentState, step: Option<String>, job: Option<String>) -> Status {
    Status {
        protocol: PROTOCOL_VERSION,
        agent_version: "sim".into(),
        state,
        step,
        progress: None,
        job,
        last_command: 0,
        error: None,
        identity: MachineIdentity {
            dmi_uuid: Some("sim-uuid".into()),
            macs: vec!["52:54:00:00:00:01".into()],
            disk_serials: vec![],
        },
        survey: None,
        updated_ms: 0,
        first_boot: None,
    }
}

fn run_action(a: &Action) -> Result<serde_json::Value, String> {
    match a {
        Action::Shell { command, .. } => {
            let out = Command::new("sh")
                .args(["-c", command])
                .output()
                .map_err(|e| format!("sh: {e}"))?;
            let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() {
                Ok(serde_json::json!({ "stdout": stdout }))
            } else {
                Err(format!(
                    "shell command failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        }
        other => Ok(serde_json::json!({ "simulated": format!("{other:?}") })),
    }
}

impl SimAgent {
    /// Starts an agent whose transport `make` builds inside its thread (so
    /// a thread that entered a network namespace builds its client there).
    fn start(
        make: impl FnOnce() -> Box<dyn Transport> + Send + 'static,
        heartbeat_ms: u64,
    ) -> SimAgent {
        let stop = Arc::new(AtomicBool::new(false));
        let runs = Arc::new(Mutex::new(Vec::new()));
        let (s, r) = (stop.clone(), runs.clone());
        let handle = std::thread::spawn(move || {
            let mut mb = Mailbox::new(make(), 0).expect("mailbox");
            let idle = status(AgentState::Idle, None, None);
            let _ = mb.write_status(&idle);
            while !s.load(Ordering::SeqCst) {
                if let Err(e) = mb.heartbeat(heartbeat_ms) {
                    eprintln!("[agent] heartbeat: {e}");
                }
                let cmds = match mb.pending_commands() {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("[agent] polling: {e}");
                        std::thread::sleep(Duration::from_millis(300));
                        continue;
                    }
                };
                for c in cmds {
                    let text = match &c.action {
                        Action::Shell { command, .. } => command.clone(),
                        a => format!("{a:?}"),
                    };
                    let mut busy = status(AgentState::Busy, Some(text.clone()), c.job.clone());
                    busy.progress = Some(Progress {
                        done: 1,
                        total: Some(2),
                        unit: "steps".into(),
                    });
                    let _ = mb.write_status(&busy);
                    r.lock().expect("runs").push((c.seq, text));
                    let outcome = run_action(&c.action);
                    // An answer is retried until the server takes it: the
                    // command must not run twice.
                    while let Err(e) = mb.finish(c.seq, c.job.clone(), outcome.clone()) {
                        eprintln!("[agent] answering {}: {e}", c.seq);
                        std::thread::sleep(Duration::from_millis(500));
                    }
                    while let Err(e) = mb.write_status(&idle) {
                        eprintln!("[agent] status: {e}");
                        std::thread::sleep(Duration::from_millis(500));
                    }
                }
                std::thread::sleep(Duration::from_millis(heartbeat_ms.min(300)));
            }
        });
        SimAgent {
            stop,
            runs,
            handle: Some(handle),
        }
    }

    fn runs(&self) -> Vec<(u64, String)> {
        self.runs.lock().expect("runs").clone()
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for SimAgent {
    fn drop(&mut self) {
        self.stop();
    }
}

fn https_agent(url: &str, token: &str, dir: &Path) -> impl FnOnce() -> Box<dyn Transport> {
    let (url, token, trust) = (url.to_string(), token.to_string(), trust(dir));
    move || connect::connect(&url, &token, Some(&trust)).expect("connect")
}

fn shell(cmd: &str) -> Action {
    Action::Shell {
        command: cmd.into(),
        timeout_s: 60,
    }
}

fn wait_job(c: &Client, id: &str, secs: u64) -> JobView {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        match c.job(id) {
            Ok(j) if j.state != JobState::Running => return j,
            Ok(_) => {}
            Err(e) => eprintln!("reading job {id}: {e}"),
        }
        assert!(
            Instant::now() < until,
            "job {id} did not end within {secs} s"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

#[test]
fn https_permissions_with_curl() {
    if !have("curl") {
        eprintln!("SKIP https_permissions_with_curl: curl is not installed");
        return;
    }
    let d = tempfile::tempdir().expect("tempdir");
    let dir = d.path().join("srv");
    init_dir(&dir, &[]);
    let s = Serve::start(&dir, "127.0.0.1:0", None);
    let url = &s.url;
    let (op, enroll) = (read(&dir, "operator.token"), read(&dir, "enroll.token"));

    // No system trust: without --cacert curl refuses the server.
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", &format!("{url}/v1/mailboxes")])
        .output()
        .expect("curl");
    assert!(!out.status.success(), "curl trusted a private CA by itself");

    let (code, body) = curl(
        &dir,
        &[
            "-X",
            "POST",
            "-H",
            &bearer(&enroll),
            &format!("{url}/v1/enroll"),
        ],
    );
    assert_eq!(code, 201, "{body}");
    let a: serde_json::Value = serde_json::from_str(&body).expect("json");
    let (id_a, tok_a) = (
        a["id"].as_str().expect("id"),
        a["token"].as_str().expect("t"),
    );
    let (code, body) = curl(
        &dir,
        &[
            "-X",
            "POST",
            "-H",
            &bearer(&enroll),
            &format!("{url}/v1/enroll"),
        ],
    );
    assert_eq!(code, 201, "{body}");
    let b: serde_json::Value = serde_json::from_str(&body).expect("json");
    let (id_b, tok_b) = (
        b["id"].as_str().expect("id"),
        b["token"].as_str().expect("t"),
    );
    assert_ne!(id_a, id_b);
    // Re-enrolling an existing id is refused.
    let (code, _) = curl(
        &dir,
        &[
            "-X",
            "POST",
            "-H",
            &bearer(&enroll),
            "--data",
            &format!("{{\"id\":\"{id_a}\"}}"),
            &format!("{url}/v1/enroll"),
        ],
    );
    assert_eq!(code, 409);

    // Listing: operator yes; agent and enrollment tokens 403; nobody 401.
    let (code, body) = curl(&dir, &["-H", &bearer(&op), &format!("{url}/v1/mailboxes")]);
    assert_eq!(code, 200);
    assert!(body.contains(id_a) && body.contains(id_b), "{body}");
    assert_eq!(
        curl(
            &dir,
            &["-H", &bearer(tok_a), &format!("{url}/v1/mailboxes")]
        )
        .0,
        403
    );
    assert_eq!(
        curl(
            &dir,
            &["-H", &bearer(&enroll), &format!("{url}/v1/mailboxes")]
        )
        .0,
        403
    );
    assert_eq!(curl(&dir, &[&format!("{url}/v1/mailboxes")]).0, 401);
    assert_eq!(
        curl(
            &dir,
            &[
                "-H",
                "Authorization: Bearer ferry-op.00",
                &format!("{url}/v1/mailboxes")
            ]
        )
        .0,
        401
    );

    // Agents write their own status, and cannot touch each other's.
    let status_a = format!("{url}/v1/mailboxes/{id_a}/status.json");
    let status_b = format!("{url}/v1/mailboxes/{id_b}/status.json");
    let (code, _) = curl(
        &dir,
        &[
            "-X",
            "PUT",
            "-H",
            &bearer(tok_a),
            "--data",
            "{\"a\":1}",
            &status_a,
        ],
    );
    assert_eq!(code, 204);
    let (code, _) = curl(
        &dir,
        &[
            "-X",
            "PUT",
            "-H",
            &bearer(tok_b),
            "--data",
            "{\"b\":2}",
            &status_b,
        ],
    );
    assert_eq!(code, 204);
    assert_eq!(
        curl(&dir, &["-H", &bearer(tok_a), &status_a]),
        (200, "{\"a\":1}".into())
    );
    assert_eq!(curl(&dir, &["-H", &bearer(tok_a), &status_b]).0, 403);
    assert_eq!(
        curl(
            &dir,
            &["-H", &bearer(tok_a), &format!("{url}/v1/mailboxes/{id_b}/")]
        )
        .0,
        403
    );
    assert_eq!(
        curl(
            &dir,
            &["-X", "PUT", "-H", &bearer(tok_a), "--data", "x", &status_b]
        )
        .0,
        403
    );
    // An agent does not write commands; the operator does, once.
    let cmd1 = format!("{url}/v1/mailboxes/{id_a}/cmd-00000000000000000001.json");
    assert_eq!(
        curl(
            &dir,
            &[
                "-X",
                "PUT",
                "-H",
                &bearer(tok_a),
                "-H",
                "If-None-Match: *",
                "--data",
                "{}",
                &cmd1
            ]
        )
        .0,
        403
    );
    assert_eq!(
        curl(
            &dir,
            &[
                "-X",
                "PUT",
                "-H",
                &bearer(&op),
                "-H",
                "If-None-Match: *",
                "--data",
                "{}",
                &cmd1
            ]
        )
        .0,
        201
    );
    assert_eq!(
        curl(
            &dir,
            &[
                "-X",
                "PUT",
                "-H",
                &bearer(&op),
                "-H",
                "If-None-Match: *",
                "--data",
                "{\"x\":1}",
                &cmd1
            ]
        )
        .0,
        412
    );
    assert_eq!(
        curl(
            &dir,
            &["-X", "PUT", "-H", &bearer(&op), "--data", "{}", &cmd1]
        )
        .0,
        428,
        "write-once names need If-None-Match"
    );
    assert_eq!(
        curl(&dir, &["-H", &bearer(tok_a), &cmd1]),
        (200, "{}".into())
    );
    let (code, body) = curl(
        &dir,
        &["-H", &bearer(tok_a), &format!("{url}/v1/mailboxes/{id_a}/")],
    );
    assert_eq!(code, 200);
    assert!(
        body.contains("cmd-00000000000000000001.json") && body.contains("status.json"),
        "{body}"
    );
    assert_eq!(
        curl(
            &dir,
            &[
                "-H",
                &bearer(tok_a),
                &format!("{url}/v1/mailboxes/{id_a}/..%2fsecret")
            ]
        )
        .0,
        400
    );

    // A capability URI reads exactly one file, read-only, until it expires.
    let (code, body) = curl(
        &dir,
        &[
            "-X",
            "POST",
            "-H",
            &bearer(&op),
            "-H",
            "Content-Type: application/json",
            "--data",
            &format!("{{\"path\":\"/v1/mailboxes/{id_b}/status.json\",\"ttl_s\":600}}"),
            &format!("{url}/v1/caps"),
        ],
    );
    assert_eq!(code, 201, "{body}");
    let cap: serde_json::Value = serde_json::from_str(&body).expect("json");
    let cap = format!("{url}{}", cap["url"].as_str().expect("url"));
    assert_eq!(curl(&dir, &[&cap]), (200, "{\"b\":2}".into()));
    let query = cap.split_once('?').expect("query").1;
    assert_eq!(
        curl(
            &dir,
            &[&format!("{url}/v1/mailboxes/{id_b}/heartbeat.json?{query}")]
        )
        .0,
        403,
        "another file"
    );
    assert_eq!(
        curl(
            &dir,
            &[&format!("{url}/v1/mailboxes/{id_a}/status.json?{query}")]
        )
        .0,
        403,
        "another mailbox"
    );
    assert_eq!(
        curl(&dir, &[&format!("{url}/v1/mailboxes/{id_b}/?{query}")]).0,
        403,
        "listing"
    );
    assert_eq!(
        curl(&dir, &[&format!("{url}/v1/mailboxes?{query}")]).0,
        403,
        "listing mailboxes"
    );
    assert_eq!(
        curl(&dir, &["-X", "PUT", "--data", "x", &cap]).0,
        403,
        "writing"
    );
    assert_eq!(curl(&dir, &["-X", "DELETE", &cap]).0, 403, "deleting");
    let last = cap.chars().last().expect("sig");
    let flipped = format!(
        "{}{}",
        &cap[..cap.len() - 1],
        if last == '0' { '1' } else { '0' }
    );
    assert_eq!(curl(&dir, &[&flipped]).0, 403, "tampered signature");
    let exp: u64 = query
        .split('&')
        .find_map(|p| p.strip_prefix("exp="))
        .expect("exp")
        .parse()
        .expect("n");
    let extended = cap.replace(&format!("exp={exp}"), &format!("exp={}", exp + 3600));
    assert_eq!(curl(&dir, &[&extended]).0, 403, "extended expiry");
    let (code, body) = curl(
        &dir,
        &[
            "-X",
            "POST",
            "-H",
            &bearer(&op),
            "-H",
            "Content-Type: application/json",
            "--data",
            &format!("{{\"path\":\"/v1/mailboxes/{id_b}/status.json\",\"ttl_s\":1}}"),
            &format!("{url}/v1/caps"),
        ],
    );
    assert_eq!(code, 201);
    let short: serde_json::Value = serde_json::from_str(&body).expect("json");
    let short = format!("{url}{}", short["url"].as_str().expect("url"));
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(curl(&dir, &[&short]).0, 403, "expired");
    // Agent tokens cannot make capabilities.
    assert_eq!(
        curl(
            &dir,
            &[
                "-X",
                "POST",
                "-H",
                &bearer(tok_a),
                "-H",
                "Content-Type: application/json",
                "--data",
                &format!("{{\"path\":\"/v1/mailboxes/{id_b}/status.json\"}}"),
                &format!("{url}/v1/caps")
            ]
        )
        .0,
        403
    );

    // The agent's client pins the CA by fingerprint, and refuses a wrong pin.
    let ca_pem = std::fs::read_to_string(dir.join("ca.pem")).expect("ca");
    let der = ca_der(&ca_pem);
    let fp = manager::init::fingerprint(&der);
    let pinned = Trust::parse(&format!("sha256:{fp}")).expect("pin");
    let t = connect::connect(url, tok_a, Some(&pinned)).expect("connect");
    assert_eq!(
        t.read("status.json").expect("pinned read").as_deref(),
        Some(&b"{\"a\":1}"[..])
    );
    let wrong = Trust::parse(&format!("sha256:{}", "00".repeat(32))).expect("pin");
    let t = connect::connect(url, tok_a, Some(&wrong)).expect("connect");
    let err = t.read("status.json").expect_err("a wrong pin must fail");
    assert!(err.to_string().contains(url.as_str()), "{err}");

    // The operator deletes a mailbox; its agent's token then finds nothing.
    assert_eq!(
        curl(
            &dir,
            &[
                "-X",
                "DELETE",
                "-H",
                &bearer(&op),
                &format!("{url}/v1/mailboxes/{id_b}")
            ]
        )
        .0,
        204
    );
    assert_eq!(curl(&dir, &["-H", &bearer(tok_b), &status_b]).0, 404);
}

/// The DER of the first certificate in a PEM text.
fn ca_der(pem: &str) -> Vec<u8> {
    let b64: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    let out = Command::new("sh")
        .args(["-c", &format!("printf %s '{b64}' | base64 -d")])
        .output()
        .expect("base64");
    out.stdout
}

#[test]
fn a_job_survives_a_server_restart_and_failures_carry_the_agents_error() {
    let d = tempfile::tempdir().expect("tempdir");
    let dir = d.path().join("srv");
    init_dir(&dir, &[]);
    let s = Serve::start(&dir, "127.0.0.1:0", None);
    let port = s.port();
    let url = s.url.clone();
    let (id, token) =
        connect::enroll(&url, &read(&dir, "enroll.token"), &trust(&dir)).expect("enroll");
    let mut agent = SimAgent::start(https_agent(&url, &token, &dir), 500);
    let op = operator(&dir, &url);
    let marker = d.path().join("marker");
    let job = op
        .create_job(
            &id,
            vec![
                shell("echo one"),
                shell(&format!("touch {}; sleep 3; echo two", marker.display())),
                shell("echo three"),
            ],
        )
        .expect("job");
    // Kill the server while step 2 runs on the agent, then start another.
    let until = Instant::now() + Duration::from_secs(30);
    while !marker.exists() {
        assert!(Instant::now() < until, "step 2 never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    s.kill();
    std::thread::sleep(Duration::from_millis(1500));
    let s2 = Serve::start(&dir, &format!("127.0.0.1:{port}"), None);
    let j = wait_job(&op, &job.id, 60);
    assert_eq!(j.state, JobState::Finished, "{j:#?}");
    let out: Vec<String> = j
        .steps
        .iter()
        .map(|s| s.result["stdout"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(out, ["one", "two", "three"]);
    let runs = agent.runs();
    assert_eq!(runs.len(), 3, "each step ran exactly once: {runs:?}");
    let seqs: Vec<u64> = runs.iter().map(|r| r.0).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    // A failing step ends the job with the agent's error text; later steps
    // are never sent.
    let job = op
        .create_job(
            &id,
            vec![shell("echo disk on fire >&2; exit 3"), shell("echo never")],
        )
        .expect("job");
    let j = wait_job(&op, &job.id, 30);
    assert_eq!(j.state, JobState::Failed);
    let err = j.error.clone().unwrap_or_default();
    assert!(
        err.contains("disk on fire") && err.contains("exit status: 3"),
        "{err}"
    );
    assert_eq!(j.steps[1].state, "pending");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!agent.runs().iter().any(|r| r.1.contains("never")));

    // `ferry job` and `ferry jobs` show the same, and exit non-zero for
    // the failed job.
    let out = Command::new(ferry_bin())
        .args(["job", &job.id, "--follow", "--server", &s2.url, "--dir"])
        .arg(&dir)
        .output()
        .expect("ferry job");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        text.contains("failed") && text.contains("disk on fire"),
        "{text}"
    );
    let out = Command::new(ferry_bin())
        .args(["jobs", "--server", &s2.url, "--dir"])
        .arg(&dir)
        .output()
        .expect("ferry jobs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("finished") && text.contains("failed") && text.contains("3/3"),
        "{text}"
    );
    agent.stop();
    drop(s2);
}

#[test]
fn replayed_and_duplicated_commands_run_once() {
    let d = tempfile::tempdir().expect("tempdir");
    let dir = d.path().join("srv");
    init_dir(&dir, &[]);
    let s = Serve::start(&dir, "127.0.0.1:0", None);
    let (id, token) =
        connect::enroll(&s.url, &read(&dir, "enroll.token"), &trust(&dir)).expect("enroll");
    let agent = SimAgent::start(https_agent(&s.url, &token, &dir), 300);
    let op = operator(&dir, &s.url);
    let job = op.create_job(&id, vec![shell("echo once")]).expect("job");
    let j = wait_job(&op, &job.id, 30);
    assert_eq!(j.state, JobState::Finished);
    let seq = j.steps[0].seq.expect("seq");
    // Replay the very command (same number, same content) as the operator.
    let name = format!("cmd-{seq:020}.json");
    let cmd = serde_json::json!({
        "protocol": 1, "seq": seq, "job": job.id, "issued_ms": 1,
        "action": "shell", "command": "echo once", "timeout_s": 60
    });
    let admin = connect::connect(&s.url, &read(&dir, "operator.token"), Some(&trust(&dir)));
    // The operator token names no mailbox: address it in the URL.
    assert!(admin.is_err());
    let admin = connect::connect(
        &format!("{}/v1/mailboxes/{id}", s.url),
        &read(&dir, "operator.token"),
        Some(&trust(&dir)),
    )
    .expect("operator transport");
    assert!(admin
        .create(&name, cmd.to_string().as_bytes())
        .expect("replay"));
    // Duplicate creates of one name are refused by the server. (Checked on
    // a name no one consumes: the agent may already have taken the replay.)
    let probe = "probe-duplicate.json";
    assert!(admin.create(probe, b"{}").expect("create"));
    assert!(!admin.create(probe, b"{}").expect("duplicate"));
    admin.delete(probe).expect("delete probe");
    let until = Instant::now() + Duration::from_secs(10);
    while admin.list().expect("list").contains(&name) {
        assert!(
            Instant::now() < until,
            "the replayed command was never consumed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(agent.runs().len(), 1, "{:?}", agent.runs());
    assert!(
        admin
            .read(&format!("resp-{seq:020}.json"))
            .expect("read")
            .is_none(),
        "acknowledged"
    );
}

#[test]
fn heartbeat_expiry_marks_agents_offline() {
    let d = tempfile::tempdir().expect("tempdir");
    let dir = d.path().join("srv");
    init_dir(&dir, &[]);
    let s = Serve::start(&dir, "127.0.0.1:0", None);
    let (id, token) =
        connect::enroll(&s.url, &read(&dir, "enroll.token"), &trust(&dir)).expect("enroll");
    let agents = |factor: u32| -> serde_json::Value {
        let out = Command::new(ferry_bin())
            .args([
                "agents",
                "--json",
                "--offline-factor",
                &factor.to_string(),
                "--server",
                &s.url,
                "--dir",
            ])
            .arg(&dir)
            .output()
            .expect("ferry agents");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("json")
    };
    let find = |v: &serde_json::Value| -> serde_json::Value {
        v.as_array()
            .expect("array")
            .iter()
            .find(|a| a["id"] == id.as_str())
            .cloned()
            .expect("our agent")
    };
    assert!(
        find(&agents(3)).get("online").is_none(),
        "never heard from: unknown"
    );
    let mut agent = SimAgent::start(https_agent(&s.url, &token, &dir), 400);
    std::thread::sleep(Duration::from_millis(1000));
    let a = find(&agents(3));
    assert_eq!(a["online"], true, "{a}");
    assert_eq!(a["state"], "idle");
    assert_eq!(a["identity"]["dmi_uuid"], "sim-uuid");
    agent.stop();
    // 3 × 400 ms without a heartbeat: offline; a larger factor: not yet.
    std::thread::sleep(Duration::from_millis(1700));
    assert_eq!(find(&agents(3))["online"], false);
    assert_eq!(find(&agents(30))["online"], true);
    let out = Command::new(ferry_bin())
        .args([
            "agents",
            "--offline-factor",
            "3",
            "--server",
            &s.url,
            "--dir",
        ])
        .arg(&dir)
        .output()
        .expect("ferry agents");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(id.as_str()) && text.contains("offline"),
        "{text}"
    );

    // `ferry deploy --agent` and `ferry capture --agent` start jobs whose
    // commands say what the operator asked.
    let start = |args: &[&str]| -> String {
        let out = Command::new(ferry_bin())
            .args(args)
            .args(["--agent", id.as_str(), "--server", &s.url, "--dir"])
            .arg(&dir)
            .output()
            .expect("ferry");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let deploy = start(&[
        "deploy",
        "web",
        "--target",
        "/dev/vda",
        "--firmware",
        "uefi",
        "--adapt",
        "--scheme",
        "gpt",
        "--map",
        "0:0",
        "--convert",
        "0:2:xfs",
    ]);
    let capture = start(&[
        "capture", "--name", "web2", "--disk", "/dev/sda", "--disk", "/dev/sdb",
    ]);
    let op = operator(&dir, &s.url);
    let j = op.job(&deploy).expect("deploy job");
    assert_eq!(
        j.steps[0].action,
        Action::Deploy {
            image: "web".into(),
            targets: vec!["/dev/vda".into()],
            firmware: Some("uefi".into()),
            adapt: true,
            scheme: Some(agent::plan::TableKind::Gpt),
            mapping: vec![(0, 0)],
            convert: vec![agent::plan::FsConvert {
                disk: 0,
                number: 2,
                to: imaging::disk::FsType::Xfs,
            }],
            relay: None,
        }
    );
    assert_eq!(j.steps[0].state, "sent", "{j:#?}");
    let j = op.job(&capture).expect("capture job");
    assert_eq!(
        j.steps[0].action,
        Action::Capture {
            image: "web2".into(),
            disks: vec!["/dev/sda".into(), "/dev/sdb".into()],
            parent: None,
            relay: None,
        }
    );
    assert_eq!(j.online, Some(false));
}

/// moto's S3 server on a free loopback port; killed when dropped.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_moto() -> Option<Moto> {
    if !have("moto_server") || !have("curl") {
        return None;
    }
    let port = free_port();
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let endpoint = format!("http://127.0.0.1:{port}");
    let moto = Moto { child, endpoint };
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = Command::new("curl")
            .args([
                "-sf",
                "-o",
                "/dev/null",
                "-X",
                "PUT",
                &format!("{}/ferry", moto.endpoint),
            ])
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(moto);
        }
        if Instant::now() > until {
            eprintln!("moto_server did not answer within 30 s");
            return None;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn two_managers_over_one_s3_bucket() {
    let Some(moto) = start_moto() else {
        eprintln!("SKIP two_managers_over_one_s3_bucket: moto_server (pip install 'moto[server]') or curl is missing");
        return;
    };
    let d = tempfile::tempdir().expect("tempdir");
    let dir = d.path().join("srv");
    init_dir(&dir, &[]);
    let store = format!("s3://ferry/fleet?endpoint={}", moto.endpoint);
    let s1 = Serve::start(&dir, "127.0.0.1:0", Some(&store));
    let s2 = Serve::start(&dir, "127.0.0.1:0", Some(&store));
    // Enrolled through one, served by the other.
    let (id, token) =
        connect::enroll(&s1.url, &read(&dir, "enroll.token"), &trust(&dir)).expect("enroll");
    let mut agent = SimAgent::start(https_agent(&s2.url, &token, &dir), 400);
    let (op1, op2) = (operator(&dir, &s1.url), operator(&dir, &s2.url));
    assert!(op2.agents(None).expect("agents").iter().any(|a| a.id == id));
    // Write-once holds on S3 too (If-None-Match: * through object_store).
    let t = connect::connect(&s2.url, &token, Some(&trust(&dir))).expect("connect");
    assert!(t
        .create("req-00000000000000000099.json", b"{}")
        .expect("create"));
    assert!(!t
        .create("req-00000000000000000099.json", b"{}")
        .expect("create again"));
    // Both managers drive the job; s1 dies halfway; each step runs once.
    let job = op1
        .create_job(
            &id,
            vec![shell("echo a"), shell("sleep 2; echo b"), shell("echo c")],
        )
        .expect("job");
    let until = Instant::now() + Duration::from_secs(30);
    while !agent.runs().iter().any(|r| r.1.contains("echo b")) {
        assert!(Instant::now() < until, "step 2 never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    s1.kill();
    let j = wait_job(&op2, &job.id, 60);
    assert_eq!(j.state, JobState::Finished, "{j:#?}");
    let runs = agent.runs();
    assert_eq!(runs.len(), 3, "{runs:?}");
    assert_eq!(
        j.steps
            .iter()
            .map(|s| s.result["stdout"].clone())
            .collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
    agent.stop();
    // The objects really are in the bucket.
    let out = Command::new("curl")
        .args([
            "-sf",
            &format!("{}/ferry?prefix=fleet/mailboxes/{id}/", moto.endpoint),
        ])
        .output()
        .expect("curl");
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains("status.json") && listing.contains("mailbox.json"),
        "{listing}"
    );
}

/// A network namespace with a veth pair; removed when dropped.
struct Netns {
    name: String,
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn sh_ok(script: &str) -> bool {
    Command::new("sh")
        .args(["-c", script])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn an_agent_behind_an_outbound_only_firewall() {
    if !is_root() || !have("ip") || !have("nft") || !have("curl") || !have("python3") {
        eprintln!(
            "SKIP an_agent_behind_an_outbound_only_firewall: needs root, ip, nft, curl, python3"
        );
        return;
    }
    let pid = std::process::id();
    let ns = Netns {
        name: format!("ferry-mgr-{pid}"),
    };
    let (host_if, ns_if) = (
        format!("fmh{}", pid % 100000),
        format!("fmn{}", pid % 100000),
    );
    let net = format!("10.{}.{}", 100 + pid % 100, pid / 100 % 250);
    let (host_ip, ns_ip) = (format!("{net}.1"), format!("{net}.2"));
    let d = tempfile::tempdir().expect("tempdir");
    let dir = d.path().join("srv");
    init_dir(&dir, &[&host_ip]);
    let s = Serve::start(&dir, "0.0.0.0:0", None);
    let port = s.port();
    let ok = sh_ok(&format!(
        "set -e; ip netns add {n}; ip link add {h} type veth peer name {i}; \
         ip link set {i} netns {n}; ip addr add {host_ip}/24 dev {h}; ip link set {h} up; \
         ip netns exec {n} ip addr add {ns_ip}/24 dev {i}; ip netns exec {n} ip link set {i} up; \
         ip netns exec {n} ip link set lo up",
        n = ns.name,
        h = host_if,
        i = ns_if
    ));
    assert!(ok, "setting up the namespace failed");
    // Inside: only outbound connections to the server, and their replies.
    let rules = format!(
        "table inet agentfw {{\n\
           chain input {{ type filter hook input priority 0; policy drop;\n\
             iif lo accept\n\
             ct state established,related accept\n\
           }}\n\
           chain output {{ type filter hook output priority 0; policy drop;\n\
             oif lo accept\n\
             ct state established,related accept\n\
             ip daddr {host_ip} tcp dport {port} ct state new accept\n\
           }}\n\
         }}\n"
    );
    let rules_file = d.path().join("fw.nft");
    std::fs::write(&rules_file, rules).expect("rules");
    assert!(sh_ok(&format!(
        "ip netns exec {} nft -f {}",
        ns.name,
        rules_file.display()
    )));

    // Outbound to the server works: enroll from inside with curl.
    let ca = dir.join("ca.pem");
    let server = format!("https://{host_ip}:{port}");
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            "curl",
            "-sS",
            "--max-time",
            "10",
            "--cacert",
        ])
        .arg(&ca)
        .args([
            "-X",
            "POST",
            "-H",
            &bearer(&read(&dir, "enroll.token")),
            &format!("{server}/v1/enroll"),
        ])
        .output()
        .expect("curl in netns");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let id = MailboxId::parse(e["id"].as_str().expect("id")).expect("id");
    let token = e["token"].as_str().expect("token").to_string();

    // Outbound anywhere else is dropped: another port on the same host.
    let other = TcpListener::bind((host_ip.as_str(), 0)).expect("bind");
    let other_port = other.local_addr().expect("addr").port();
    assert!(
        !sh_ok(&format!(
            "ip netns exec {} curl -s --max-time 3 http://{host_ip}:{other_port}/ -o /dev/null",
            ns.name
        )),
        "the namespace reached a port other than the server's"
    );
    // Incoming connections are refused: a listener inside is unreachable.
    let mut inside = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            "python3",
            "-m",
            "http.server",
            "--bind",
            &ns_ip,
            "8099",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("listener in netns");
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        sh_ok(&format!(
            "ip netns exec {} curl -s --max-time 3 http://{ns_ip}:8099/ -o /dev/null",
            ns.name
        )),
        "the listener inside does not work from inside (the test is broken)"
    );
    assert!(
        !sh_ok(&format!(
            "curl -s --max-time 3 http://{ns_ip}:8099/ -o /dev/null"
        )),
        "the host connected into the namespace"
    );
    let _ = inside.kill();
    let _ = inside.wait();

    // The agent runs inside (its thread enters the namespace before making
    // its client) and carries out a job from the operator outside.
    let ns_path = PathBuf::from(format!("/var/run/netns/{}", ns.name));
    let (srv, tok, tr) = (server.clone(), token.clone(), trust(&dir));
    let agent = SimAgent::start(
        move || {
            let f = std::fs::File::open(&ns_path).expect("netns file");
            nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            connect::connect(&srv, &tok, Some(&tr)).expect("connect")
        },
        400,
    );
    let op = operator(&dir, &format!("https://127.0.0.1:{port}"));
    let job = op
        .create_job(&id, vec![shell("ip -o -4 addr show")])
        .expect("job");
    let j = wait_job(&op, &job.id, 30);
    assert_eq!(j.state, JobState::Finished, "{j:#?}");
    let addrs = j.steps[0].result["stdout"].as_str().unwrap_or("");
    // The shell ran in the agent's thread's namespace: it sees the ns address.
    assert!(addrs.contains(&ns_ip), "{addrs}");
    assert_eq!(agent.runs().len(), 1);
    assert!(op
        .agents(None)
        .expect("agents")
        .iter()
        .any(|a| a.id == id && a.online == Some(true)));
}
