//! The QEMU harness: boots a disk on a described virtual machine (TCG, no
//! KVM on these machines), records its serial console, waits for text on it
//! and types into it.
//!
//! The console is the guest's ttyS0 on QEMU's stdio: everything the guest
//! prints is appended to a log file (kept next to the test's other
//! artifacts, and printed in part when a wait fails), and [`Vm::type_line`]
//! writes to the guest's serial input.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// QEMU's accelerator for a machine that reboots or kexecs within one QEMU
/// process: TCG with a 64 MiB translation cache (QEMU's default is 1 GiB).
/// The cache keeps the code of the OS that ran before, and the next kernel
/// pays to invalidate it page by page as it writes over those pages: the
/// agent's kernel took 8.8–26 s to unpack its initramfs after Debian with
/// the default cache, 2.5 s with this one (2.3 s in a fresh QEMU), and
/// Debian boots no slower. An emulator artefact: real machines and KVM
/// translate nothing.
pub const TCG_ACCEL: [&str; 2] = ["-accel", "tcg,tb-size=64"];

/// A virtual machine's hardware: the QEMU arguments recorded with its
/// hardware-survey fixture (`tests/fixtures/hw/<config>/qemu-args`, made by
/// `tests/fixtures/hw/capture.sh`), so a boot test runs on exactly the
/// hardware whose survey `ferry adapt` was given.
#[derive(Clone, Debug)]
pub struct Machine {
    /// The fixture's name (`virtio`, `nvme-e1000e`, ...).
    pub config: String,
    args: Vec<String>,
}

impl Machine {
    /// The machine of hardware fixture `config`.
    pub fn from_fixture(config: &str) -> Machine {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/hw")
            .join(config)
            .join("qemu-args");
        let text =
            std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
        let args = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .flat_map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .collect();
        Machine {
            config: config.to_string(),
            args,
        }
    }

    /// A machine from explicit QEMU arguments (`@DISK@` and
    /// `@OVMF_VARS@` are substituted as in fixtures), for media tests
    /// that boot an ISO or the network instead of a fixture's disk.
    pub fn from_args(config: &str, args: &[&str]) -> Machine {
        Machine {
            config: config.to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
        }
    }

    /// Whether it boots with OVMF.
    pub fn is_uefi(&self) -> bool {
        self.args.iter().any(|a| a.contains("OVMF"))
    }

    /// QEMU arguments for this machine booting `disk` (raw), its console on
    /// stdio.
    pub fn args(&self, disk: &Path, ovmf_vars: Option<&Path>) -> Vec<String> {
        let vars = ovmf_vars
            .map(|v| v.display().to_string())
            .unwrap_or_default();
        let mut a: Vec<String> = self
            .args
            .iter()
            .map(|x| {
                x.replace("@DISK@", &disk.display().to_string())
                    .replace("@OVMF_VARS@", &vars)
            })
            .collect();
        for x in [
            "-no-reboot",
            "-display",
            "none",
            "-monitor",
            "none",
            "-serial",
            "stdio",
        ] {
            a.push(x.to_string());
        }
        a
    }
}

/// A running VM, killed on drop.
pub struct Vm {
    child: Child,
    stdin: Option<ChildStdin>,
    console: Arc<Mutex<Vec<u8>>>,
    log: PathBuf,
    started: Instant,
    _vars: Option<tempfile::NamedTempFile>,
}

impl Vm {
    /// Boots `disk` on `machine`; the console goes to `log` as well.
    pub fn boot(machine: &Machine, disk: &Path, log: &Path) -> Vm {
        let vars = machine.is_uefi().then(|| {
            let v = tempfile::NamedTempFile::new().expect("temp OVMF vars");
            std::fs::copy("/usr/share/OVMF/OVMF_VARS.fd", v.path())
                .expect("copying /usr/share/OVMF/OVMF_VARS.fd (package ovmf)");
            v
        });
        let args = machine.args(disk, vars.as_ref().map(|v| v.path()));
        let mut vm = Vm::boot_args(&args, log);
        vm._vars = vars;
        vm
    }

    /// Starts `qemu-system-x86_64 ARGS` (which must put the console on
    /// stdio); the console goes to `log` as well. For machines that are
    /// not a hardware fixture, or that must survive a guest reboot (no
    /// `-no-reboot`).
    pub fn boot_args(args: &[String], log: &Path) -> Vm {
        let mut child = Command::new("qemu-system-x86_64")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting qemu-system-x86_64: {e}"));
        eprintln!("qemu-system-x86_64 {}", args.join(" "));
        let mut out = child.stdout.take().expect("piped stdout");
        let console = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&console);
        let mut file = std::fs::File::create(log)
            .unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let _ = file.write_all(&buf[..n]);
                if let Ok(mut c) = sink.lock() {
                    c.extend_from_slice(&buf[..n]);
                }
            }
        });
        Vm {
            stdin: child.stdin.take(),
            child,
            console,
            log: log.to_path_buf(),
            started: Instant::now(),
            _vars: None,
        }
    }

    /// Everything the console has printed so far (lossy UTF-8).
    pub fn console(&self) -> String {
        let c = self.console.lock().map(|c| c.clone()).unwrap_or_default();
        String::from_utf8_lossy(&c).into_owned()
    }

    /// Waits until the console shows `text` after byte `from`; returns the
    /// console length at the end of the match. On timeout, or when the VM
    /// stops first, returns the console's last lines as the error.
    pub fn wait_for_after(
        &mut self,
        text: &str,
        from: usize,
        timeout: Duration,
    ) -> Result<usize, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let c = self.console();
            if let Some(i) = c.get(from..).and_then(|t| t.find(text)) {
                return Ok(from + i + text.len());
            }
            let exited = matches!(self.child.try_wait(), Ok(Some(_)));
            if exited || Instant::now() > deadline {
                let tail: Vec<&str> = c.lines().rev().take(40).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                return Err(format!(
                    "{} waiting for {text:?} after {:.0} s (console in {}):\n{}",
                    if exited {
                        "the VM stopped"
                    } else {
                        "timed out"
                    },
                    self.started.elapsed().as_secs_f64(),
                    self.log.display(),
                    tail.join("\n")
                ));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// [`Vm::wait_for_after`] from the start of the console.
    pub fn wait_for(&mut self, text: &str, timeout: Duration) -> Result<usize, String> {
        self.wait_for_after(text, 0, timeout)
    }

    /// Types a line on the serial console.
    pub fn type_line(&mut self, line: &str) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = stdin.write_all(format!("{line}\r").as_bytes());
            let _ = stdin.flush();
        }
    }

    /// Logs in as `user` with `password` after a `login:` prompt that was
    /// already seen, then runs `command`; returns what it printed between
    /// two markers.
    pub fn login_and_run(
        &mut self,
        user: &str,
        password: &str,
        command: &str,
    ) -> Result<String, String> {
        let t = Duration::from_secs(120);
        let start = self.console().len();
        self.type_line(user);
        let p = self.wait_for_after("assword:", start, t)?;
        self.type_line(password);
        let shell = self.wait_for_after("# ", p, t)?;
        // The markers are split in the typed line, so the echo of the
        // command itself never matches them.
        self.type_line(&format!("echo FERRY''BEGIN; {command}; echo FERRY''END"));
        let begin = self.wait_for_after("FERRYBEGIN", shell, t)?;
        let end = self.wait_for_after("FERRYEND", begin, t)?;
        let c = self.console();
        Ok(c[begin..end - "FERRYEND".len()].trim().to_string())
    }

    /// Waits until QEMU exits (the guest powered off); on timeout returns
    /// the console's last lines as the error.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let c = self.console();
        let tail: Vec<&str> = c.lines().rev().take(20).collect();
        Err(format!(
            "the VM did not power off within {timeout:?} (console in {}):\n{}",
            self.log.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ))
    }

    /// Seconds since the VM started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
