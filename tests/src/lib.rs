//! ferry's end-to-end test harness.
//!
//! Tests here run the built `ferry` binary the way an operator does and
//! check what an operator would: exit codes, messages naming the damaged
//! file, byte-identical restores. The binary is `$FERRY_BIN`, else the
//! workspace's `target/release/ferry`, else `target/debug/ferry`; `./run
//! test` builds it first. The QEMU harness joins this crate with the boot
//! tests (issues 5, 6, 8).
#![forbid(unsafe_code)]

pub mod lab;
pub mod manager;
pub mod qemu;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `ferry` binary under test.
pub fn ferry_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("FERRY_BIN") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for profile in ["release", "debug"] {
        let p = root.join("target").join(profile).join("ferry");
        if p.exists() {
            return p;
        }
    }
    panic!(
        "no ferry binary: build it with `cargo build --release` (./run test does) or set FERRY_BIN"
    );
}

/// A `ferry` command on library `lib`.
pub fn ferry(lib: &Path) -> Command {
    let mut c = Command::new(ferry_bin());
    c.arg("--library").arg(lib).env_remove("FERRY_LIBRARY");
    c
}

/// Runs a command to completion, returning its output.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

/// Runs a command that must succeed; returns its stdout.
pub fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command that must fail; returns its stderr.
pub fn fails(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        !out.status.success(),
        "{cmd:?} should have failed but succeeded"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs a command that prints JSON and parses it.
pub fn json(cmd: &mut Command) -> serde_json::Value {
    let out = ok(cmd.arg("--json"));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{cmd:?} printed no JSON ({e}):\n{out}"))
}

/// Runs a command that prints JSON, like [`json`], and also returns the bytes
/// it read from storage: a shell runs it and then reads its own
/// `/proc/PID/io`, to which the kernel adds a reaped child's `read_bytes`.
pub fn json_and_disk_reads(cmd: &Command) -> (serde_json::Value, u64) {
    let mut shell = Command::new("sh");
    shell
        .arg("-c")
        .arg(r#""$@" --json || exit $?; echo; grep '^read_bytes:' /proc/$$/io"#)
        .arg("sh")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => shell.env(k, v),
            None => shell.env_remove(k),
        };
    }
    let out = ok(&mut shell);
    let (json, io) = out
        .rsplit_once("read_bytes:")
        .unwrap_or_else(|| panic!("{cmd:?}: no read_bytes line after its output:\n{out}"));
    let value = serde_json::from_str(json)
        .unwrap_or_else(|e| panic!("{cmd:?} printed no JSON ({e}):\n{json}"));
    let read = io
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("read_bytes of {cmd:?}: {e}: {io}"));
    (value, read)
}

/// Deterministic pseudo-random bytes (xorshift64).
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A disk-like file: `mib` MiB of mixed random, text-like and zero regions.
pub fn write_disk_like(path: &Path, mib: usize, seed: u64) {
    let mut data = Vec::with_capacity(mib << 20);
    let mut i = 0u64;
    while data.len() < mib << 20 {
        match i % 4 {
            0 => data.extend(pseudo_random(3 << 20, seed + i)),
            1 => data.extend(std::iter::repeat_n(0u8, 2 << 20)),
            2 => data.extend(
                pseudo_random(1 << 20, seed + i)
                    .iter()
                    .map(|b| b"etc/passwd root:x:0:0 /bin/bash\n"[(*b % 32) as usize]),
            ),
            _ => data.extend(pseudo_random(2 << 20, seed * 7 + i)),
        }
        i += 1;
    }
    data.truncate(mib << 20);
    std::fs::write(path, data).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// True when running as root (loop devices, mknod, chown, security xattrs).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Whether a missing prerequisite fails a test instead of skipping it.
/// `./run test` installs every prerequisite and sets `FERRY_TEST_STRICT=1`,
/// so there a skip can only mean a broken set-up (as when apt removed
/// qemu-img while installing QEMU, and the swap test passed unrun).
pub fn strict() -> bool {
    std::env::var_os("FERRY_TEST_STRICT").is_some_and(|v| v == "1")
}

/// Says why `test` cannot run: a failure under [`strict`], otherwise a loud
/// `SKIPPED` line (the caller returns).
pub fn skip(test: &str, why: &str) {
    assert!(
        !strict(),
        "{test} cannot run: {why} (FERRY_TEST_STRICT=1: ./run test installs every prerequisite)"
    );
    eprintln!("SKIPPED {test}: {why}");
}

/// Returns early from a test, loudly, when a prerequisite is missing (a
/// failure under [`strict`]).
#[macro_export]
macro_rules! require {
    ($cond:expr, $test:expr, $why:expr) => {
        if !$cond {
            $crate::skip(&$test, &$why);
            return;
        }
    };
}

/// The Debian bookworm fixture (built once, cached outside the repo by
/// `tests/fixtures/debian-disk.sh`): its directory, holding `debian.img`,
/// `debian-v2.img` and `rootfs.tar.zst`.
pub fn debian_fixture() -> PathBuf {
    fixture("debian-disk.sh")
}

/// Runs a fixture script of `tests/fixtures` (it builds or reuses its cache
/// entry) and returns the directory it prints last.
fn fixture(script: &str) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(script);
    let out = Command::new(&script)
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(out.status.success(), "{} failed", script.display());
    let stdout = String::from_utf8_lossy(&out.stdout);
    PathBuf::from(stdout.lines().last().unwrap_or_default().trim())
}

/// Extracts the fixture's Debian root tree into `dest` with full metadata.
pub fn extract_debian_tree(fixture: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).unwrap_or_else(|e| panic!("creating {}: {e}", dest.display()));
    ok(Command::new("tar")
        .args([
            "--xattrs",
            "--xattrs-include=*",
            "--acls",
            "--numeric-owner",
            "-I",
            "zstd",
            "-xpf",
        ])
        .arg(fixture.join("rootfs.tar.zst"))
        .arg("-C")
        .arg(dest));
}

/// `rsync -aHAXn --numeric-ids --itemize-changes SRC/ DST/`: every
/// difference, one per line; empty when the trees are identical.
pub fn rsync_differences(src: &Path, dst: &Path) -> String {
    let mut a = src.as_os_str().to_owned();
    a.push("/");
    let mut b = dst.as_os_str().to_owned();
    b.push("/");
    ok(Command::new("rsync")
        .args(["-aHAXn", "--numeric-ids", "--itemize-changes"])
        .arg(a)
        .arg(b))
}

/// Runs a shell snippet that must succeed.
pub fn sh(script: &str) {
    ok(Command::new("bash").args(["-euo", "pipefail", "-c", script]));
}

/// A loop device over a file (or a byte range of it), detached on drop
/// together with any partitions `partx` added.
pub struct Loop(pub PathBuf);

impl Loop {
    /// `losetup --find --show [--read-only] [--offset O --sizelimit S] FILE`.
    pub fn attach(file: &Path, read_only: bool, range: Option<(u64, u64)>) -> Loop {
        let mut cmd = Command::new("losetup");
        cmd.args(["--find", "--show"]);
        if read_only {
            cmd.arg("--read-only");
        }
        if let Some((off, len)) = range {
            cmd.args([
                "--offset",
                &off.to_string(),
                "--sizelimit",
                &len.to_string(),
            ]);
        }
        let out = ok(cmd.arg(file));
        Loop(PathBuf::from(out.trim()))
    }

    /// The node of partition `n`: `/dev/loopNpM`.
    pub fn part(&self, n: u32) -> PathBuf {
        PathBuf::from(format!("{}p{n}", self.0.display()))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("partx").arg("-d").arg(&self.0).output();
        let _ = Command::new("losetup").arg("-d").arg(&self.0).output();
    }
}

/// A read-only mount of a device at a fresh directory, unmounted on drop.
pub struct Mount {
    /// Where it is mounted.
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Mount {
    /// `mount -o ro,noload DEV DIR` (noload: never replay a journal).
    pub fn read_only(dev: &Path, fs: &str) -> Mount {
        let tmp = tempfile::tempdir().expect("tempdir");
        let opts = if fs.starts_with("ext") {
            "ro,noload"
        } else {
            "ro,norecovery"
        };
        ok(Command::new("mount")
            .args(["-t", fs, "-o", opts])
            .arg(dev)
            .arg(tmp.path()));
        Mount {
            dir: tmp.path().to_path_buf(),
            _tmp: tmp,
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).output();
    }
}

/// The layout (b) fixture directory (`tests/fixtures/debian-gpt.sh`):
/// holds `debian-gpt.img`.
pub fn debian_gpt_fixture() -> PathBuf {
    fixture("debian-gpt.sh")
}

/// The source server of the boot tests (`tests/fixtures/debian-ide.sh`):
/// holds `debian-ide.img`, whose initramfs was built with MODULES=dep on
/// IDE hardware.
pub fn debian_ide_fixture() -> PathBuf {
    fixture("debian-ide.sh")
}

/// The source server with a separate /boot and swap
/// (`tests/fixtures/debian-split.sh`): holds `debian-split.img`, the system
/// of [`debian_ide_fixture`] on an MBR disk of /boot (`LABEL=boot` in its
/// fstab), swap (`/dev/disk/by-label/swap`) and root (by its by-id name,
/// `ata-QEMU_HARDDISK_FERRYSPLITSOURCE-part3`: the disk's serial on the
/// lab machine named `split-source`).
pub fn debian_split_fixture() -> PathBuf {
    fixture("debian-split.sh")
}

/// The PCI devices of an agent's survey as `vendor:device` in lowercase
/// hex (`8086:100e`).
pub fn survey_pci_ids(survey: &serde_json::Value) -> Vec<String> {
    survey["pci"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|d| {
                    let id = |k: &str| {
                        d[k].as_str()
                            .unwrap_or("")
                            .trim_start_matches("0x")
                            .to_ascii_lowercase()
                    };
                    format!("{}:{}", id("vendor"), id("device"))
                })
                .collect()
        })
        .unwrap_or_default()
}
