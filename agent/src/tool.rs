//! Running the system tools a deploy needs (`mke2fs`, `mkfs.xfs`,
//! `e2fsck`, `losetup`, `partx`, `mount`, …).
//!
//! A [`Tool`] names a program and the Debian package that ships it, so a
//! missing program gives a message saying what to install. The program is
//! looked up in `PATH` and then in `/usr/sbin`, `/sbin`, `/usr/bin` and
//! `/bin` (an agent started without root's `PATH` still finds `mke2fs`).
//! Programs run with `LC_ALL=C`, so messages are stable. A failure names
//! the device worked on, the command line and the end of the tool's
//! stderr (or stdout when stderr is empty).

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Directories searched after `PATH`.
const FALLBACK_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];
/// How much of a failing tool's output an error keeps: its last lines, up
/// to this many bytes (enough for e2fsck's summary of what is wrong).
const TAIL_BYTES: usize = 2000;
/// … and at most this many lines.
const TAIL_LINES: usize = 20;

/// `mount`, used to mount file systems and bind pseudo file systems.
pub(crate) const MOUNT: Tool = Tool {
    program: "mount",
    package: "mount",
};
/// `umount`.
pub(crate) const UMOUNT: Tool = Tool {
    program: "umount",
    package: "mount",
};

/// An external program and the Debian package that provides it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tool {
    /// The program's name (`mke2fs`).
    pub program: &'static str,
    /// The Debian package shipping it (`e2fsprogs`).
    pub package: &'static str,
}

/// Why a tool could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The program is not installed.
    #[error(
        "{program} is needed for {device} but is not installed (not in PATH or \
         /usr/sbin, /sbin); install the Debian package `{package}`"
    )]
    Missing {
        /// The program.
        program: &'static str,
        /// Its Debian package.
        package: &'static str,
        /// The device it was needed for.
        device: String,
    },
    /// The program could not be started.
    #[error("{device}: starting `{command}`: {source}")]
    Spawn {
        /// The device worked on.
        device: String,
        /// The command line.
        command: String,
        /// The error.
        source: io::Error,
    },
    /// The program ran and failed.
    #[error("{device}: `{command}` failed ({status}): {output}")]
    Failed {
        /// The device worked on.
        device: String,
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// The end of its stderr (or stdout).
        output: String,
    },
}

impl Tool {
    /// Where the program is, if installed.
    pub fn locate(&self) -> Option<PathBuf> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain(FALLBACK_DIRS.iter().map(PathBuf::from))
            .map(|d| d.join(self.program))
            .find(|p| is_executable(p))
    }

    /// Runs the program with `args` for `device` (named in errors) and
    /// returns its output when its exit code is one of `ok_codes`.
    pub fn run<S: AsRef<OsStr>>(
        &self,
        device: &Path,
        args: &[S],
        ok_codes: &[i32],
    ) -> Result<Output, ToolError> {
        self.run_with(device, args, ok_codes, |_| {})
    }

    /// [`run`](Self::run), with `configure` adjusting the command first
    /// (its environment, working directory).
    pub fn run_with<S: AsRef<OsStr>>(
        &self,
        device: &Path,
        args: &[S],
        ok_codes: &[i32],
        configure: impl FnOnce(&mut Command),
    ) -> Result<Output, ToolError> {
        let dev = device.display().to_string();
        let exe = self.locate().ok_or_else(|| ToolError::Missing {
            program: self.program,
            package: self.package,
            device: dev.clone(),
        })?;
        let command = command_line(self.program, args);
        tracing::debug!(%command, "running");
        let mut cmd = Command::new(&exe);
        cmd.args(args).env("LC_ALL", "C");
        configure(&mut cmd);
        let out = cmd.output().map_err(|source| ToolError::Spawn {
            device: dev.clone(),
            command: command.clone(),
            source,
        })?;
        match out.status.code() {
            Some(c) if ok_codes.contains(&c) => Ok(out),
            _ => Err(ToolError::Failed {
                device: dev,
                command,
                status: out.status.to_string(),
                output: tail(if out.stderr.iter().any(|b| !b.is_ascii_whitespace()) {
                    &out.stderr
                } else {
                    &out.stdout
                }),
            }),
        }
    }

    /// [`run`](Self::run), tried up to `tries` times `pause` apart (for
    /// `umount` and `losetup -d`, which fail while the kernel still drops
    /// the last reference); the last failure is returned.
    pub fn run_retrying<S: AsRef<OsStr>>(
        &self,
        device: &Path,
        args: &[S],
        tries: u32,
        pause: std::time::Duration,
    ) -> Result<Output, ToolError> {
        let mut attempt = 1;
        loop {
            match self.run(device, args, &[0]) {
                Err(ToolError::Failed { .. }) if attempt < tries => {
                    attempt += 1;
                    std::thread::sleep(pause);
                }
                done => return done,
            }
        }
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The command line as a shell would take it (arguments with spaces or
/// quotes are single-quoted).
fn command_line<S: AsRef<OsStr>>(program: &str, args: &[S]) -> String {
    let mut s = program.to_string();
    for a in args {
        let a = a.as_ref().to_string_lossy();
        s.push(' ');
        if !a.is_empty()
            && a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_=./:,+@%".contains(c))
        {
            s.push_str(&a);
        } else {
            s.push('\'');
            s.push_str(&a.replace('\'', r"'\''"));
            s.push('\'');
        }
    }
    s
}

/// The last lines of `out`, trimmed to [`TAIL_BYTES`] and [`TAIL_LINES`].
fn tail(out: &[u8]) -> String {
    let text = String::from_utf8_lossy(out);
    let lines: Vec<&str> = text.trim_end().lines().collect();
    let mut s = lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n");
    if s.len() > TAIL_BYTES {
        let mut cut = s.len() - TAIL_BYTES;
        while !s.is_char_boundary(cut) {
            cut += 1;
        }
        s = format!("…{}", &s[cut..]);
    }
    if s.is_empty() {
        "(no output)".into()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_quote_what_needs_it() {
        assert_eq!(
            command_line("mke2fs", &["-L", "my root", "-U", "x'y", "/dev/sda1"]),
            r"mke2fs -L 'my root' -U 'x'\''y' /dev/sda1"
        );
        assert_eq!(command_line::<&str>("x", &[""]), "x ''");
    }

    #[test]
    fn tails_keep_the_end() {
        let many: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let t = tail(many.as_bytes());
        assert!(t.starts_with("line 80\n") && t.ends_with("line 99"), "{t}");
        let long = "é".repeat(3000);
        assert!(tail(long.as_bytes()).len() <= TAIL_BYTES + 4);
        assert_eq!(tail(b"  \n"), "(no output)");
    }

    #[test]
    fn missing_tools_name_their_package() {
        let t = Tool {
            program: "ferry-no-such-tool",
            package: "ferry-pkg",
        };
        let e = t
            .run(Path::new("/dev/x"), &["a"], &[0])
            .expect_err("missing");
        let msg = e.to_string();
        assert!(
            msg.contains("ferry-no-such-tool")
                && msg.contains("`ferry-pkg`")
                && msg.contains("/dev/x"),
            "{msg}"
        );
    }

    #[test]
    fn failures_name_device_command_and_stderr() {
        let sh = Tool {
            program: "sh",
            package: "dash",
        };
        let e = sh
            .run(Path::new("/dev/y"), &["-c", "echo oops >&2; exit 3"], &[0])
            .expect_err("fails");
        let msg = e.to_string();
        assert!(
            msg.contains("/dev/y")
                && msg.contains("sh -c 'echo oops >&2; exit 3'")
                && msg.contains("oops"),
            "{msg}"
        );
        assert!(sh
            .run(Path::new("/dev/y"), &["-c", "exit 1"], &[0, 1])
            .is_ok());
    }
}
