//! The `shell` action: `/bin/sh -c COMMAND` in its own process group, its
//! output captured (the first [`OUTPUT_CAP`] bytes of each stream; the rest
//! is read and dropped so the command never blocks on a full pipe), killed
//! with its whole process group when it outlives its timeout.
//!
//! Processes the command leaves behind in its group are killed when it
//! exits too: a step of a job does not leave daemons running in the agent.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde::Serialize;

/// The most output kept per stream.
pub const OUTPUT_CAP: usize = 64 << 10;

/// How long the output readers get after the command has exited (a
/// descendant that left the process group may still hold the pipes).
const DRAIN: Duration = Duration::from_secs(2);

/// How a shell command ended.
#[derive(Clone, Debug, Serialize)]
pub struct ShellOutput {
    /// Its exit status (`None` when a signal ended it).
    pub exit_code: Option<i32>,
    /// The signal that ended it.
    pub signal: Option<i32>,
    /// Its standard output (lossy UTF-8, at most [`OUTPUT_CAP`] bytes).
    pub stdout: String,
    /// Its standard error (likewise).
    pub stderr: String,
    /// Whether either stream was cut at [`OUTPUT_CAP`].
    pub truncated: bool,
    /// Wall time in seconds.
    pub seconds: f64,
}

/// Why a shell command failed to run or finish.
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    /// /bin/sh could not be started.
    #[error("starting /bin/sh -c {command:?}")]
    Spawn {
        /// The command.
        command: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Waiting for it failed.
    #[error("waiting for /bin/sh -c {command:?}")]
    Wait {
        /// The command.
        command: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It ran past its timeout and was killed.
    #[error(
        "/bin/sh -c {command:?} ran longer than {timeout_s} s and was killed with its process \
         group; its last output: {tail}"
    )]
    Timeout {
        /// The command.
        command: String,
        /// The timeout.
        timeout_s: u64,
        /// The end of what it printed.
        tail: String,
    },
}

#[derive(Default)]
struct Captured {
    data: Vec<u8>,
    truncated: bool,
    done: bool,
}

fn reader(mut r: impl Read + Send + 'static) -> Arc<Mutex<Captured>> {
    let buf = Arc::new(Mutex::new(Captured::default()));
    let b = Arc::clone(&buf);
    std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            let n = match r.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let mut c = b.lock().unwrap_or_else(|p| p.into_inner());
            let room = OUTPUT_CAP.saturating_sub(c.data.len());
            c.data.extend_from_slice(&chunk[..n.min(room)]);
            c.truncated |= n > room;
        }
        b.lock().unwrap_or_else(|p| p.into_inner()).done = true;
    });
    buf
}

fn take(c: &Arc<Mutex<Captured>>) -> (String, bool) {
    let c = c.lock().unwrap_or_else(|p| p.into_inner());
    (String::from_utf8_lossy(&c.data).into_owned(), c.truncated)
}

fn is_done(c: &Arc<Mutex<Captured>>) -> bool {
    c.lock().unwrap_or_else(|p| p.into_inner()).done
}

/// Runs `command` with `/bin/sh -c`, killing it (and its process group)
/// after `timeout`.
pub fn run(command: &str, timeout: Duration) -> Result<ShellOutput, ShellError> {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let started = Instant::now();
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|source| ShellError::Spawn {
            command: command.into(),
            source,
        })?;
    let pgid = Pid::from_raw(i32::try_from(child.id()).expect("pids fit in pid_t"));
    let out = reader(child.stdout.take().expect("stdout is piped"));
    let err = reader(child.stderr.take().expect("stderr is piped"));
    let deadline = started + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if Instant::now() >= deadline => break None,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(source) => {
                let _ = killpg(pgid, Signal::SIGKILL);
                let _ = child.wait();
                return Err(ShellError::Wait {
                    command: command.into(),
                    source,
                });
            }
        }
    };
    // Whatever is left of the group goes: the command's leftovers after
    // it exited, or all of it after the timeout.
    let _ = killpg(pgid, Signal::SIGKILL);
    let status = match status {
        Some(st) => st,
        None => {
            let _ = child.wait();
            let drain_end = Instant::now() + DRAIN;
            while !(is_done(&out) && is_done(&err)) && Instant::now() < drain_end {
                std::thread::sleep(Duration::from_millis(20));
            }
            let (o, _) = take(&out);
            let (e, _) = take(&err);
            let both = format!("{o}{e}");
            let tail: String = {
                let chars: Vec<char> = both.chars().collect();
                chars[chars.len().saturating_sub(1000)..].iter().collect()
            };
            return Err(ShellError::Timeout {
                command: command.into(),
                timeout_s: timeout.as_secs(),
                tail: tail.trim().to_string(),
            });
        }
    };
    let drain_end = Instant::now() + DRAIN;
    while !(is_done(&out) && is_done(&err)) && Instant::now() < drain_end {
        std::thread::sleep(Duration::from_millis(5));
    }
    let (stdout, t1) = take(&out);
    let (stderr, t2) = take(&err);
    Ok(ShellOutput {
        exit_code: status.code(),
        signal: status.signal(),
        stdout,
        stderr,
        truncated: t1 || t2,
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_and_exit_code() {
        let o = run("echo hello; echo oops >&2; exit 3", Duration::from_secs(10)).expect("run");
        assert_eq!(o.exit_code, Some(3));
        assert_eq!(o.stdout, "hello\n");
        assert_eq!(o.stderr, "oops\n");
        assert!(!o.truncated);
    }

    #[test]
    fn output_is_capped() {
        let o = run(
            "head -c 200000 /dev/zero | tr '\\0' x",
            Duration::from_secs(10),
        )
        .expect("run");
        assert_eq!(o.exit_code, Some(0));
        assert_eq!(o.stdout.len(), OUTPUT_CAP);
        assert!(o.truncated);
    }

    #[test]
    fn timeout_kills_the_group() {
        let d = tempfile::tempdir().expect("tempdir");
        let pidfile = d.path().join("pid");
        let t = Instant::now();
        let e = run(
            &format!(
                "echo started; sleep 30 & echo $! > {}; sleep 30; echo finished",
                pidfile.display()
            ),
            Duration::from_secs(1),
        )
        .expect_err("must time out");
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        let msg = e.to_string();
        assert!(msg.contains("longer than 1 s"), "{msg}");
        assert!(msg.ends_with("its last output: started"), "{msg}");
        // The background sleep went with the group (a zombie until init
        // reaps it at most: its state is Z, not S).
        let pid = std::fs::read_to_string(&pidfile).expect("pid file");
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()));
        if let Ok(stat) = stat {
            assert!(stat.contains(") Z "), "still running: {stat}");
        }
    }
}
