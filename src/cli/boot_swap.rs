//! `ferry boot swap`: moves this running Linux machine onto the ferry agent
//! (see `boot::swap`).

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use boot::swap::{self, Leave};

/// Arguments of `ferry boot swap`.
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("how").required(true).args(["kexec", "grub"])))]
pub struct SwapArgs {
    /// The agent's kernel.
    #[arg(long)]
    kernel: PathBuf,
    /// The agent's initramfs.
    #[arg(long)]
    initrd: PathBuf,
    /// The agent's kernel command line; default: this system's console=
    /// parameters.
    #[arg(long)]
    cmdline: Option<String>,
    /// Boot the agent now with kexec (no firmware, no boot loader).
    #[arg(long)]
    kexec: bool,
    /// Boot the agent once through GRUB (grub-reboot), rebooting now; the
    /// boot after the agent's returns to this OS.
    #[arg(long)]
    grub: bool,
    /// Reboot without asking.
    #[arg(long)]
    yes: bool,
    /// When the agent cannot come up or reach its server, it reboots this
    /// many seconds after its boot, back into this OS (added to the
    /// command line as `ferry.return_after`; 0: it stays, with a rescue
    /// shell on the console).
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    return_after: u64,
}

/// Asks on the terminal; without one (and without --yes) the answer is no.
fn confirm(question: &str) -> bool {
    if !std::io::stdin().is_terminal() {
        return false;
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    matches!(line.trim(), "y" | "Y" | "yes")
}

/// `cmdline` with `ferry.return_after=SECONDS`, unless it sets one.
fn with_return_after(cmdline: &str, seconds: u64) -> String {
    if cmdline
        .split_whitespace()
        .any(|w| w.starts_with("ferry.return_after="))
    {
        return cmdline.to_string();
    }
    format!("{cmdline} ferry.return_after={seconds}")
        .trim()
        .to_string()
}

/// Runs `ferry boot swap`.
pub fn run(a: SwapArgs) -> anyhow::Result<ExitCode> {
    swap::require_root()?;
    let cmdline = match a.cmdline {
        Some(c) => c,
        None => swap::inherited_cmdline(
            &std::fs::read_to_string("/proc/cmdline").context("reading /proc/cmdline")?,
        ),
    };
    let cmdline = with_return_after(&cmdline, a.return_after);
    if a.kexec && agent::runner::kexec::disabled() {
        anyhow::bail!(agent::runner::kexec::KexecError::Disabled);
    }
    let installed = swap::install_files(std::path::Path::new("/"), &a.kernel, &a.initrd)
        .context("installing the agent's kernel and initramfs")?;
    eprintln!(
        "ferry boot swap: installed {} and {}",
        installed.kernel.display(),
        installed.initrd.display()
    );
    let (how, verb) = if a.kexec {
        swap::load_kexec(&installed, &cmdline).context("loading the agent's kernel")?;
        eprintln!("ferry boot swap: kernel loaded for kexec (command line {cmdline:?})");
        (Leave::Kexec, "kexec into the agent")
    } else {
        let cfg = swap::install_grub_entry(&installed, &cmdline)
            .context("adding the one-shot GRUB entry")?;
        eprintln!(
            "ferry boot swap: {:?} added to {} and set to boot once; the boot after it returns to this OS",
            swap::ENTRY_TITLE,
            cfg.display()
        );
        (Leave::Reboot, "reboot into the agent")
    };
    if !(a.yes || confirm(&format!("{verb} now?"))) {
        eprintln!(
            "ferry boot swap: ready; not rebooting without --yes (run `{}` when ready)",
            if a.kexec { "systemctl kexec" } else { "reboot" }
        );
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("ferry boot swap: {verb}");
    Err(swap::leave(how)).context(verb)
}

#[cfg(test)]
mod tests {
    use super::with_return_after;

    #[test]
    fn return_after_is_added_once() {
        assert_eq!(
            with_return_after("console=ttyS0", 600),
            "console=ttyS0 ferry.return_after=600"
        );
        assert_eq!(with_return_after("", 0), "ferry.return_after=0");
        assert_eq!(
            with_return_after("ferry.return_after=30 quiet", 600),
            "ferry.return_after=30 quiet"
        );
    }
}
