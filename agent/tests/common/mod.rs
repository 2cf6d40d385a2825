//! What the agent's integration tests share: loud skips when root or a
//! tool is missing, and sparse image files.
#![allow(dead_code)] // each test binary uses a different part

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const MIB: u64 = 1 << 20;

/// `tool` is installed (in PATH or the sbin directories).
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args([
            "-c",
            &format!("PATH=$PATH:/usr/sbin:/sbin command -v {tool}"),
        ])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Prints `SKIPPED <what>: <why>` on stdout and stderr (so it shows with
/// and without `--nocapture`).
pub fn say_skipped(what: &str, why: &str) {
    println!("SKIPPED {what}: {why}");
    eprintln!("SKIPPED {what}: {why}");
}

/// True (after saying so) when the test cannot run: it needs root and
/// this is not root, or one of `tools` is missing.
pub fn skip(test: &str, root: bool, tools: &[&str]) -> bool {
    if root && !nix::unistd::geteuid().is_root() {
        say_skipped(test, "needs root (loop devices, mkfs, mount)");
        return true;
    }
    if let Some(t) = tools.iter().find(|t| !have(t)) {
        say_skipped(test, &format!("{t} is not installed"));
        return true;
    }
    false
}

/// A new sparse file of `size` bytes.
pub fn sparse(dir: &Path, name: &str, size: u64) -> (PathBuf, File) {
    let path = dir.join(name);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .expect("create image");
    f.set_len(size).expect("size image");
    (path, f)
}

/// Runs `cmd` with `args`; panics with its output on failure.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let o = Command::new(cmd).args(args).output().expect("spawn");
    assert!(
        o.status.success(),
        "{cmd} {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs a shell command; panics with its output on failure.
pub fn sh(script: &str) -> String {
    run("sh", &["-c", script])
}
