//! The first-boot check (issue 8) against a real `ferry serve`: a deployed
//! server's `ferry first-boot` reports through the deploying agent's
//! mailbox, shows up as `booted` in `ferry agents`, and disables itself;
//! a wrong CA is refused; an unreachable server is retried, then given up
//! within the bound. The check runs on this host against a target tree
//! (`--root`), installed there by the same code adapt uses; no VM is
//! booted (the e2e test boots a migrated server and checks its report).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use agent::adapt::changes::Changes;
use agent::firstboot::{self, FirstBootConfig};
use agent::mailbox::https::Trust;
use agent::mailbox::{connect, AgentState, MachineIdentity, Mailbox, MailboxId, Status};
use ferry_tests::ferry_bin;
use ferry_tests::manager::Manager;

/// Whether curl (the harness reads mailbox files with it) is installed;
/// says so loudly when not.
fn have_curl() -> bool {
    let ok = Command::new("curl").arg("--version").output().is_ok();
    if !ok {
        ferry_tests::skip("firstboot", "curl is not installed (apt-get install curl)");
    }
    ok
}

/// A target root with systemd, the check installed into it by adapt's
/// code, with `$FERRY_BIN` as the static binary.
fn installed_target(cfg: &FirstBootConfig) -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().expect("tempdir");
    let root = d.path().join("root");
    std::fs::create_dir_all(root.join("usr/lib/systemd")).expect("mkdir");
    std::fs::write(root.join("usr/lib/systemd/systemd"), b"").expect("write");
    let mut changes = Changes::begin(&root, "20261124T000000Z");
    let mut cfg = cfg.clone();
    cfg.binary = ferry_bin();
    assert!(firstboot::install(&mut changes, &root, &cfg).expect("install"));
    assert_eq!(changes.applied().len(), 4);
    (d, root)
}

/// `ferry first-boot` as the unit runs it: the binary copied into the
/// target.
fn first_boot(root: &Path, give_up: &str) -> Command {
    let mut c = Command::new(root.join(firstboot::BINARY));
    c.arg("first-boot").arg("--root").arg(root).args([
        "--give-up-after",
        give_up,
        "--state-wait",
        "5s",
    ]);
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn read_proc(name: &str) -> String {
    std::fs::read_to_string(Path::new("/proc/sys/kernel").join(name))
        .expect("proc")
        .trim()
        .to_string()
}

fn enrolled(m: &Manager) -> (MailboxId, String, Trust) {
    let trust = Trust::parse(&m.ca_fingerprint).expect("fingerprint");
    let (id, token) = connect::enroll(&m.url(), &m.enroll_token, &trust).expect("enroll");
    (id, token, trust)
}

fn config(server: String, mailbox: MailboxId, token: String, ca_sha256: &str) -> FirstBootConfig {
    FirstBootConfig {
        server,
        mailbox,
        token,
        ca_pem: None,
        ca_sha256: Some(ca_sha256.trim_start_matches("sha256:").to_string()),
        binary: PathBuf::new(),
    }
}

#[test]
fn a_first_boot_reports_booted_through_the_mailbox_and_disables_itself() {
    if !have_curl() {
        return;
    }
    let m = Manager::start();
    let (id, token, trust) = enrolled(&m);
    // What the deploying agent left: a status with an identity, having
    // carried out commands up to 7.
    let t = connect::connect(&m.url(), &token, Some(&trust)).expect("connect");
    let mb = Mailbox::new(t, 7).expect("mailbox");
    mb.write_status(&Status {
        protocol: agent::mailbox::PROTOCOL_VERSION,
        agent_version: "test".into(),
        state: AgentState::Idle,
        step: None,
        progress: None,
        job: None,
        last_command: 7,
        error: None,
        identity: MachineIdentity {
            dmi_uuid: Some("dmi-1".into()),
            macs: vec!["52:54:00:12:34:56".into()],
            disk_serials: vec![],
        },
        survey: None,
        updated_ms: 0,
        first_boot: None,
    })
    .expect("status");
    // The CA by certificate this time (the wrong-CA test pins by hash).
    let mut cfg = config(m.url(), id.clone(), token, &m.ca_fingerprint);
    cfg.ca_sha256 = None;
    cfg.ca_pem = Some(std::fs::read_to_string(m.file("ca.pem")).expect("ca.pem"));
    let (_d, root) = installed_target(&cfg);

    let out = first_boot(&root, "60s").output().expect("first-boot");
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "first-boot failed:\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stdout: {stdout}");
    let state = lines[0]
        .strip_prefix("ferry-first-boot: reported ")
        .and_then(|r| r.strip_suffix(&format!(" to {} (mailbox {id})", m.url())))
        .unwrap_or_else(|| panic!("unexpected line {:?}", lines[0]));
    assert!(!state.is_empty() && !state.contains(' '), "{state:?}");

    // The operator sees it.
    let agents = m.agents();
    let a = agents
        .iter()
        .find(|a| a["id"] == id.as_str())
        .unwrap_or_else(|| panic!("agent {id} not listed: {agents:#?}"));
    assert_eq!(a["state"], "booted", "{a:#}");
    let fb = &a["first_boot"];
    assert_eq!(fb["hostname"], read_proc("hostname").as_str(), "{a:#}");
    assert_eq!(fb["kernel"], read_proc("osrelease").as_str(), "{a:#}");
    assert_eq!(fb["system_state"], state, "{a:#}");
    assert!(
        fb["root_source"].as_str().is_some_and(|s| !s.is_empty()),
        "{a:#}"
    );
    assert!(fb["failed_units"].is_array(), "{a:#}");
    let booted = fb["booted_ms"].as_u64().expect("booted_ms");
    assert!(
        booted > 1_600_000_000_000 && booted < agent::mailbox::now_ms(),
        "{a:#}"
    );
    assert_eq!(a["identity"]["macs"][0], "52:54:00:12:34:56", "{a:#}");
    let table = m.ferry().arg("agents").output().expect("ferry agents");
    let table = text(&table.stdout);
    let row = table
        .lines()
        .find(|l| l.starts_with(id.as_str()))
        .unwrap_or_else(|| panic!("{id} not in\n{table}"));
    assert!(
        row.contains("booted") && row.contains(&format!("{}: {state}", read_proc("hostname"))),
        "{row}"
    );
    // Command numbering goes on from the deploying agent's.
    let status = m
        .mailbox_file(id.as_str(), "status.json")
        .expect("status.json");
    assert_eq!(status["last_command"], 7, "{status:#}");
    // The request, for managers that act on it.
    let req = m
        .mailbox_file(id.as_str(), "req-00000000000000000001.json")
        .expect("req-1");
    assert_eq!(req["kind"], "first-boot", "{req:#}");
    assert_eq!(req["body"]["hostname"], fb["hostname"], "{req:#}");

    // Disabled: the token is gone from the server, the unit no longer
    // wanted; the unit and binary stay (inert without the configuration).
    assert!(!root.join(firstboot::CONFIG).exists());
    assert!(std::fs::symlink_metadata(root.join(firstboot::WANTS_LINK)).is_err());
    assert!(root.join(firstboot::UNIT).exists());

    // A second run has nothing to report with, and says so.
    let again = first_boot(&root, "5s").output().expect("first-boot");
    assert!(!again.status.success());
    let err = text(&again.stderr);
    assert!(
        err.contains(&root.join(firstboot::CONFIG).display().to_string())
            && err.contains("reported already"),
        "{err}"
    );
}

#[test]
fn a_wrong_ca_fingerprint_is_refused_and_nothing_is_reported() {
    if !have_curl() {
        return;
    }
    let m = Manager::start();
    let (id, token, _) = enrolled(&m);
    let cfg = config(m.url(), id.clone(), token, &"00".repeat(32));
    let (_d, root) = installed_target(&cfg);
    let started = Instant::now();
    let out = first_boot(&root, "60s").output().expect("first-boot");
    let took = started.elapsed();
    let err = text(&out.stderr);
    assert!(!out.status.success(), "accepted a wrong CA:\n{err}");
    assert!(
        err.contains(&m.url()) && err.contains("refused") && err.contains("fingerprint"),
        "{err}"
    );
    // Final, not retried until the deadline.
    assert!(took < Duration::from_secs(40), "{took:?}");
    assert!(out.stdout.is_empty());
    let agents = m.agents();
    let a = agents
        .iter()
        .find(|a| a["id"] == id.as_str())
        .expect("listed");
    assert!(a.get("first_boot").is_none(), "{a:#}");
    assert_ne!(a["state"], "booted", "{a:#}");
    // Still enabled for the next boot.
    assert!(root.join(firstboot::CONFIG).exists());
    assert!(std::fs::symlink_metadata(root.join(firstboot::WANTS_LINK)).is_ok());
}

#[test]
fn an_unreachable_server_is_retried_then_given_up_within_the_bound() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let server = format!("https://127.0.0.1:{port}");
    let id = MailboxId::generate().expect("id");
    let token = format!("ferry-agent.{id}.00");
    let cfg = config(server.clone(), id, token, &"ab".repeat(32));
    let (_d, root) = installed_target(&cfg);
    let started = Instant::now();
    let out = first_boot(&root, "5s").output().expect("first-boot");
    let took = started.elapsed();
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(15),
        "gave up after {took:?}:\n{err}"
    );
    assert!(
        err.contains(&format!("server {server} unreachable")) && err.contains("stays enabled"),
        "{err}"
    );
    let retries = err.lines().filter(|l| l.contains("(attempt ")).count();
    assert!(retries >= 2, "retried {retries} time(s):\n{err}");
    assert!(root.join(firstboot::CONFIG).exists());
    assert!(std::fs::symlink_metadata(root.join(firstboot::WANTS_LINK)).is_ok());
}
