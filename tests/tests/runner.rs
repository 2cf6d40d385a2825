//! The agent's command loop (`agent::runner::run`), driven the way a
//! manager drives it: the loop runs in a thread on a local-directory
//! mailbox, with the `virtio` hardware fixture as its machine and power
//! actions disabled; the test writes `cmd-N.json` files and reads
//! `status.json`, `heartbeat.json` and `resp-N.json`.
//!
//! Covered: the first status (identity, survey), survey, shell (output,
//! exit code, timeout), a failing command's error chain, a malformed
//! command, a replayed command not run twice, heartbeats during a long
//! command, reboot/kexec answered but not done, the stop flag; with root:
//! a server capture of a loop-backed disk image into a library and its
//! deploy onto another image (fsck-clean, files identical); and the idle
//! loop's memory (VmRSS ≤ 30 MB, measured in a child process).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use agent::mailbox::{
    now_ms, read_json, Heartbeat, LocalTransport, Mailbox, MessageKind, Response, Status,
    Transport, PROTOCOL_VERSION,
};
use agent::runner::{RunnerConfig, RunnerError};
use ferry_tests::{is_root, ok, require, Loop, Mount};
use serde_json::{json, Value};

const QEMU_MAC: &str = "52:54:00:12:34:56";

fn fixture_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/hw/virtio")
}

/// An agent loop in a thread, and the manager's view of its mailbox.
struct Agent {
    dir: tempfile::TempDir,
    mb: LocalTransport,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), RunnerError>>>,
}

impl Agent {
    fn start(library: Option<&Path>, heartbeat: Duration) -> Agent {
        let dir = tempfile::tempdir().expect("tempdir");
        let mbdir = dir.path().join("mailbox");
        let survey = agent::survey::survey(&fixture_root()).expect("fixture survey");
        let mailbox =
            Mailbox::new(Box::new(LocalTransport::new(&mbdir)), 0).expect("agent mailbox");
        let cfg = RunnerConfig {
            root: fixture_root(),
            heartbeat,
            library: library.map(|l| l.display().to_string()),
            drivers: None,
            allow_power: false,
            poll: Duration::from_millis(100),
            ..Default::default()
        };
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let thread = std::thread::spawn(move || agent::runner::run(mailbox, survey, &cfg, &s));
        Agent {
            mb: LocalTransport::new(mbdir),
            dir,
            stop,
            thread: Some(thread),
        }
    }

    fn send_raw(&self, seq: u64, bytes: &[u8]) {
        assert!(
            self.mb
                .create(&MessageKind::Command.file_name(seq), bytes)
                .expect("writing a command"),
            "cmd {seq} already exists"
        );
    }

    fn send(&self, seq: u64, action: Value) {
        let mut cmd = json!({
            "protocol": PROTOCOL_VERSION,
            "seq": seq,
            "job": "job-1",
            "issued_ms": now_ms(),
        });
        for (k, v) in action.as_object().expect("an action object") {
            cmd[k] = v.clone();
        }
        self.send_raw(seq, &serde_json::to_vec(&cmd).expect("json"));
    }

    fn response(&self, seq: u64, timeout: Duration) -> Response {
        let name = MessageKind::Response.file_name(seq);
        let end = Instant::now() + timeout;
        loop {
            if let Some(r) = read_json::<Response>(&self.mb, &name, "response").expect("reading") {
                return r;
            }
            assert!(
                Instant::now() < end,
                "no {name} after {timeout:?}; status: {:?}",
                self.status()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn status(&self) -> Option<Status> {
        read_json(&self.mb, "status.json", "status").expect("reading status")
    }

    fn heartbeat(&self) -> Option<Heartbeat> {
        read_json(&self.mb, "heartbeat.json", "heartbeat").expect("reading heartbeat")
    }

    fn wait_status(&self, what: &str, f: impl Fn(&Status) -> bool) -> Status {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = self.status().filter(|s| f(s)) {
                return s;
            }
            assert!(
                Instant::now() < end,
                "status never became {what}: {:?}",
                self.status()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(mut self) -> Result<(), RunnerError> {
        self.stop.store(true, Ordering::Relaxed);
        let t = self.thread.take().expect("running");
        let end = Instant::now() + Duration::from_secs(5);
        while !t.is_finished() {
            assert!(Instant::now() < end, "the loop ignored the stop flag");
            std::thread::sleep(Duration::from_millis(20));
        }
        t.join().expect("the loop panicked")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn commands_are_answered_in_order_once() {
    let a = Agent::start(None, Duration::from_millis(200));
    let first = a.wait_status("idle", |s| s.state == agent::mailbox::AgentState::Idle);
    assert_eq!(first.identity.macs, [QEMU_MAC], "{:?}", first.identity);
    assert!(first.survey.is_some());
    assert_eq!(first.last_command, 0);

    // Survey: the fixture's hardware, and per-disk results (its /dev does
    // not exist: each disk carries its error instead of failing the survey).
    a.send(1, json!({"action": "survey"}));
    let r = a.response(1, Duration::from_secs(20));
    assert!(r.ok, "{r:?}");
    assert_eq!(r.job.as_deref(), Some("job-1"));
    assert_eq!(r.result["hardware"]["nics"][0]["mac"], QEMU_MAC);
    let disks = r.result["disks"].as_array().expect("disks");
    assert!(!disks.is_empty(), "{r:?}");
    let vda = disks
        .iter()
        .find(|d| d["path"].as_str().is_some_and(|p| p.ends_with("/dev/vda")))
        .unwrap_or_else(|| panic!("no vda in {disks:?}"));
    assert!(vda["error"].as_str().is_some(), "{vda:?}");

    // Shell: output and exit code.
    a.send(
        2,
        json!({"action": "shell", "command": "echo out; echo err >&2; exit 3"}),
    );
    let r = a.response(2, Duration::from_secs(20));
    assert!(r.ok, "{r:?}");
    assert_eq!(r.result["exit_code"], 3);
    assert_eq!(r.result["stdout"], "out\n");
    assert_eq!(r.result["stderr"], "err\n");

    // A replay of command 2 is dropped unrun.
    let marker = a.dir.path().join("replayed");
    a.send(
        2,
        json!({"action": "shell", "command": format!("touch {}", marker.display())}),
    );
    // Shell timeout: killed, answered as an error with the output so far.
    a.send(
        3,
        json!({"action": "shell", "command": "echo begun; sleep 60", "timeout_s": 1}),
    );
    let t = Instant::now();
    let r = a.response(3, Duration::from_secs(20));
    assert!(!r.ok, "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(10));
    let err = r.error.as_deref().expect("error text");
    assert!(
        err.contains("longer than 1 s") && err.contains("begun"),
        "{err}"
    );
    assert!(!marker.exists(), "the replayed command ran");
    assert!(!a
        .mb
        .list()
        .expect("list")
        .contains(&MessageKind::Command.file_name(2)));
    let r2 = a.response(2, Duration::from_secs(1));
    assert_eq!(r2.result["exit_code"], 3, "the first answer stays");

    // A failing command: its error names what failed, down to the cause.
    a.send(
        4,
        json!({"action": "capture", "image": "web1", "disks": ["/nonexistent/sda"]}),
    );
    let r = a.response(4, Duration::from_secs(20));
    assert!(!r.ok);
    let err = r.error.expect("error");
    assert!(err.contains("no library configured"), "{err}");
    let lib = a.dir.path().join("lib");
    drop(a);
    let a = Agent::start(Some(&lib), Duration::from_millis(200));
    a.send(
        1,
        json!({"action": "capture", "image": "web1", "disks": ["/nonexistent/sda"]}),
    );
    let r = a.response(1, Duration::from_secs(20));
    assert!(!r.ok);
    let err = r.error.expect("error");
    assert!(
        err.starts_with("capturing image web1: ")
            && err.contains("/nonexistent/sda")
            && err.contains("No such file or directory"),
        "{err}"
    );

    // A malformed command and a command of an unknown action.
    a.send_raw(2, b"{\"protocol\": 1, \"seq\": 2, oops");
    a.send(3, json!({"action": "teleport"}));
    for seq in [2, 3] {
        let r = a.response(seq, Duration::from_secs(20));
        assert!(!r.ok);
        assert!(
            r.error
                .as_deref()
                .unwrap_or("")
                .contains(&MessageKind::Command.file_name(seq)),
            "{r:?}"
        );
    }

    // Power actions are answered, not done; the loop carries on.
    a.send(4, json!({"action": "reboot"}));
    a.send(
        5,
        json!({"action": "kexec", "kernel": "/nonexistent/vmlinuz", "initrd": "/nonexistent/initrd", "cmdline": "console=ttyS0"}),
    );
    a.send(6, json!({"action": "poweroff"}));
    let r = a.response(4, Duration::from_secs(20));
    assert!(r.ok);
    assert_eq!(r.result, json!({"action": "reboot", "done": false}));
    let r = a.response(5, Duration::from_secs(20));
    assert!(!r.ok);
    assert!(
        r.error
            .as_deref()
            .unwrap_or("")
            .contains("/nonexistent/vmlinuz"),
        "{r:?}"
    );
    let r = a.response(6, Duration::from_secs(20));
    assert_eq!(r.result, json!({"action": "poweroff", "done": false}));
    let s = a.wait_status("idle after 6", |s| {
        s.last_command == 6 && s.state == agent::mailbox::AgentState::Idle
    });
    assert_eq!(s.job, None);
    a.stop().expect("a clean stop");
}

#[test]
fn heartbeats_continue_during_a_long_command() {
    let a = Agent::start(None, Duration::from_millis(300));
    a.wait_status("idle", |s| s.state == agent::mailbox::AgentState::Idle);
    a.send(
        1,
        json!({"action": "shell", "command": "sleep 4; echo slept"}),
    );
    let busy = a.wait_status("busy", |s| s.state == agent::mailbox::AgentState::Busy);
    assert_eq!(busy.step.as_deref(), Some("shell sleep 4; echo slept"));
    assert_eq!(busy.job.as_deref(), Some("job-1"));
    let mut beats = Vec::new();
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(600));
        let hb = a.heartbeat().expect("a heartbeat");
        assert_eq!(hb.interval_ms, 300);
        assert!(!hb.is_offline(now_ms(), 3), "{hb:?}");
        beats.push(hb.ts_ms);
    }
    assert_eq!(
        a.status().expect("status").state,
        agent::mailbox::AgentState::Busy,
        "the command should still run"
    );
    assert!(
        beats.windows(2).all(|w| w[1] > w[0]),
        "heartbeats stalled during the command: {beats:?}"
    );
    let r = a.response(1, Duration::from_secs(20));
    assert_eq!(r.result["stdout"], "slept\n");
    a.stop().expect("a clean stop");
}

/// Builds a small server disk: MBR, one ext4 partition at 1 MiB holding
/// `files`.
fn server_disk(path: &Path, files: &Path) {
    ok(Command::new("truncate").args(["-s", "64M"]).arg(path));
    ferry_tests::sh(&format!(
        "echo 'label: dos\nstart=2048, type=83' | sfdisk -q {p} && \
         mkfs.ext4 -q -F -L srvroot -d {d} -E offset=1048576 {p} 60M",
        p = path.display(),
        d = files.display()
    ));
}

#[test]
fn capture_then_deploy_through_the_mailbox() {
    require!(
        is_root(),
        "capture_then_deploy_through_the_mailbox",
        "needs root (loop devices)"
    );
    let work = tempfile::tempdir().expect("tempdir");
    let files = work.path().join("files");
    std::fs::create_dir_all(files.join("etc")).expect("mkdir");
    let payload = ferry_tests::pseudo_random(3 << 20, 7);
    std::fs::write(files.join("etc/payload.bin"), &payload).expect("write");
    std::fs::write(files.join("etc/hostname"), "web1\n").expect("write");
    let src = work.path().join("src.img");
    server_disk(&src, &files);
    let dst = work.path().join("dst.img");
    ok(Command::new("truncate").args(["-s", "96M"]).arg(&dst));

    let lib = work.path().join("lib");
    let a = Agent::start(Some(&lib), Duration::from_millis(300));
    a.send(
        1,
        json!({"action": "capture", "image": "web1", "disks": [src.display().to_string()]}),
    );
    let r = a.response(1, Duration::from_secs(120));
    assert!(r.ok, "{r:?}");
    assert_eq!(r.result["image"], "web1");
    assert_eq!(r.result["disks"], 1);
    assert!(
        r.result["stats"]["chunks"].as_u64().unwrap_or(0) > 0,
        "{r:?}"
    );

    a.send(
        2,
        json!({"action": "deploy", "image": "web1", "targets": [dst.display().to_string()], "firmware": "bios"}),
    );
    let r = a.response(2, Duration::from_secs(300));
    assert!(r.ok, "{r:?}");
    let parts = &r.result["deploy"]["disks"][0]["partitions"];
    assert_eq!(parts[0]["fsck"]["clean"], true, "{r:?}");

    // The operator's plan choices travel in the command: a GPT target
    // whose root becomes an xfs (at least 300 MiB), populated from the
    // captured file tree.
    let dst2 = work.path().join("dst2.img");
    ok(Command::new("truncate").args(["-s", "512M"]).arg(&dst2));
    a.send(
        3,
        json!({"action": "deploy", "image": "web1", "targets": [dst2.display().to_string()],
               "firmware": "bios", "scheme": "gpt", "mapping": [[0, 0]],
               "convert": [{"disk": 0, "number": 1, "to": "xfs"}]}),
    );
    let r = a.response(3, Duration::from_secs(300));
    assert!(r.ok, "{r:?}");
    a.stop().expect("a clean stop");
    let table: serde_json::Value =
        serde_json::from_str(&ok(Command::new("sfdisk").arg("--json").arg(&dst2)))
            .expect("sfdisk --json");
    assert_eq!(table["partitiontable"]["label"], "gpt", "{table}");
    let root = table["partitiontable"]["partitions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["type"] == "0FC63DAF-8483-4772-8E79-3D69D8477DE4")
        .unwrap_or_else(|| panic!("no Linux file-system partition: {table}"));
    let (start, size) = (
        root["start"].as_u64().expect("start") * 512,
        root["size"].as_u64().expect("size") * 512,
    );
    let lo = Loop::attach(&dst2, true, Some((start, size)));
    let m = Mount::read_only(&lo.0, "xfs");
    assert_eq!(
        std::fs::read(m.dir.join("etc/payload.bin")).expect("payload on the xfs"),
        payload
    );
    drop(m);
    drop(lo);

    // The operator's check: the deployed partition is fsck-clean and holds
    // the same files.
    let lo = Loop::attach(&dst, true, Some((1 << 20, 95 << 20)));
    ok(Command::new("e2fsck").arg("-fn").arg(&lo.0));
    let m = Mount::read_only(&lo.0, "ext4");
    assert_eq!(
        std::fs::read(m.dir.join("etc/payload.bin")).expect("deployed payload"),
        payload
    );
    assert_eq!(
        std::fs::read_to_string(m.dir.join("etc/hostname")).expect("hostname"),
        "web1\n"
    );
}

/// The child half of [`idle_loop_memory`]: runs the loop idle until killed.
#[test]
fn idle_agent_child() {
    if std::env::var_os("FERRY_RUNNER_IDLE_CHILD").is_none() {
        return; // Only as idle_loop_memory's child process.
    }
    let a = Agent::start(None, Duration::from_millis(200));
    std::thread::sleep(Duration::from_secs(60));
    drop(a);
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

#[test]
fn idle_loop_memory() {
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            // Its name in tests/tests/suite.rs's binary (module runner).
            "runner::idle_agent_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("FERRY_RUNNER_IDLE_CHILD", "1")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawning the idle agent");
    // Let it publish, beat and poll for a while.
    std::thread::sleep(Duration::from_secs(4));
    let rss = status_kib(child.id(), "VmRSS:");
    let hwm = status_kib(child.id(), "VmHWM:");
    let _ = child.kill();
    let _ = child.wait();
    eprintln!("idle agent loop: VmRSS {rss} KiB, VmHWM {hwm} KiB (the test harness included)");
    assert!(rss <= 30 << 10, "idle RSS {rss} KiB > 30 MiB");
    assert!(hwm <= 30 << 10, "peak RSS {hwm} KiB > 30 MiB");
}
