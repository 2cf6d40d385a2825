//! `ferry boot`: the media and swaps that bring the ferry agent onto a
//! machine.

use std::process::ExitCode;

/// `ferry boot` subcommands.
#[derive(clap::Subcommand)]
pub enum BootCmd {
    /// Move this running Linux machine onto the ferry agent: install the
    /// agent's kernel and initramfs, then kexec into them now or boot them
    /// once through GRUB (the boot after that returns to this OS).
    Swap(super::boot_swap::SwapArgs),
}

/// Runs `ferry boot`.
pub fn run(cmd: BootCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        BootCmd::Swap(a) => super::boot_swap::run(a),
    }
}
