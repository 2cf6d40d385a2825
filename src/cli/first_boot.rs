//! `ferry first-boot`: run once by systemd on a deployed server's first
//! boot (the unit `ferry adapt` installs, see `agent::firstboot`). It
//! waits for the manager, reports the boot to the deploying agent's
//! mailbox, disables itself and prints one line; when the manager cannot
//! be reached in time it exits non-zero and stays enabled for the next
//! boot.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use agent::firstboot;
use anyhow::Context;

/// Arguments of `ferry first-boot`.
#[derive(clap::Args)]
pub struct FirstBootArgs {
    /// The configuration (default ROOT/etc/ferry/first-boot.json).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The root whose /etc holds the configuration and the unit's wants
    /// link (for tests; the report describes the running system).
    #[arg(long, default_value = "/")]
    root: PathBuf,
    /// Give up when the manager has not been reached after this long
    /// (`10m`, `90s`, `5s`; plain numbers are seconds).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    give_up_after: Duration,
    /// How long to wait for the boot to settle before reading
    /// `systemctl is-system-running`.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    state_wait: Duration,
}

/// `90`, `90s`, `1500ms`, `10m`, `1h`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (like 90s, 10m)"))?;
    let secs = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "" | "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    Ok(Duration::from_secs(secs))
}

fn say(msg: &str) {
    eprintln!("ferry-first-boot: {msg}");
}

/// Runs `ferry first-boot`.
pub fn run(a: FirstBootArgs) -> anyhow::Result<ExitCode> {
    let config = a
        .config
        .clone()
        .unwrap_or_else(|| a.root.join(firstboot::CONFIG));
    let cfg = firstboot::load_config(&config)?;
    let started = Instant::now();
    let deadline = started + a.give_up_after;
    let mut log = |line: &str| say(line);
    firstboot::wait_for_server(&cfg, started, deadline, &mut log)
        .context("the first-boot check stays enabled and tries again on the next boot")?;
    say(&format!(
        "{} reachable; waiting up to {:?} for the boot to settle",
        cfg.server, a.state_wait
    ));
    let report = firstboot::collect(Path::new("/"), a.state_wait);
    let seq = firstboot::publish(&cfg, &report, started, deadline, &mut log)
        .context("the first-boot check stays enabled and tries again on the next boot")?;
    let removed = firstboot::disable(&a.root, &config)
        .with_context(|| format!("reported to {} (request {seq}), but", cfg.server))?;
    for p in removed {
        say(&format!("removed {}", p.display()));
    }
    println!(
        "ferry-first-boot: reported {} to {} (mailbox {})",
        report.system_state, cfg.server, cfg.mailbox
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("s").is_err());
    }
}
