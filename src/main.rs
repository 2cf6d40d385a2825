//! `ferry`: moves whole servers between physical, virtual and cloud machines.
//!
//! This file only parses the command line and dispatches; the work is done
//! by the library crates, the presentation by `cli`.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

// The static (musl) build: musl's malloc roughly halves chunking and LZ4
// throughput; mimalloc restores it (boot/bench-alloc.sh, README).
#[cfg(target_env = "musl")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Move whole servers between physical, virtual and cloud machines.
#[derive(Parser)]
#[command(name = "ferry", version, about)]
struct Args {
    /// The image library: a directory, or a file://, https:// (ferry serve) or s3:// URL.
    #[arg(
        long,
        global = true,
        env = "FERRY_LIBRARY",
        default_value = "./ferry-library"
    )]
    library: PathBuf,
    /// Log more (repeat for more detail).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Capture disk images or block devices into a new image.
    Capture(cli::capture::CaptureArgs),
    /// Restore an image onto a file or block device.
    Restore(cli::restore::RestoreArgs),
    /// Plan the deploy of a server image onto target disks (nothing is written).
    Plan(cli::deploy::PlanCmd),
    /// Deploy a server image onto target disks: partition, write, grow or
    /// populate, make swap, check.
    Deploy(cli::deploy::DeployCmd),
    /// Migrate a server directly from one agent to another: its disks are
    /// streamed to the target as they are read, never stored.
    Migrate(cli::migrate::MigrateArgs),
    /// Adapt a deployed server to its new hardware: drivers, initramfs,
    /// UUIDs in fstab and grub, hosts, network, boot loader.
    Adapt(cli::adapt::AdaptArgs),
    /// Survey a machine: its hardware (PCI and bus devices with modaliases,
    /// disks, NICs, firmware, DMI, CPU, memory), or with --disks its
    /// partition tables, file systems and boot pieces.
    Survey(cli::survey::SurveyArgs),
    /// List, inspect, verify, remove and garbage-collect images.
    #[command(subcommand)]
    Image(cli::image::ImageCmd),
    /// The driver library, and which kernel modules a machine's devices need.
    Drivers(cli::drivers::DriversArgs),
    /// The agent: as the ramdisk's init it brings the machine up (modules,
    /// network), surveys it and serves its mailbox.
    Agent(cli::agent::AgentArgs),
    /// Boot media for the agent (ramdisk, hybrid ISO, network boot) and
    /// the ramdisk swap of a running machine.
    #[command(subcommand)]
    Boot(cli::boot::BootCmd),
    /// Run the manager: mailboxes, jobs and PXE media over HTTPS (--init
    /// creates its CA, certificate and tokens).
    Serve(cli::serve::ServeArgs),
    /// List agents: state, online or offline, last heartbeat, hardware.
    Agents(cli::agents::AgentsArgs),
    /// List jobs.
    Jobs(cli::jobs::JobsArgs),
    /// On a deployed server's first boot: report to the manager through
    /// the deploying agent's mailbox, then disable this check.
    FirstBoot(cli::first_boot::FirstBootArgs),
    /// Show a job, or follow it with a progress bar until it ends.
    Job(cli::jobs::JobArgs),
}

fn main() -> ExitCode {
    // A panic in any thread ends the process at once, as `panic = "abort"`
    // does in release builds, also in the unwinding `ci` profile the tests
    // build with (Cargo.toml): no half-updated state survives a panic.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::abort();
    }));
    // Started by the kernel as the ramdisk's /init: be `ferry agent`,
    // whatever words of the kernel command line came as arguments.
    let argv0 = std::env::args_os().next();
    let args = if cli::agent::started_as_init(argv0.as_ref()) {
        Args::parse_from(["ferry", "agent"])
    } else {
        Args::parse()
    };
    // `ferry image ls|cat … | head`: die quietly on the closed pipe, as
    // Unix tools do, instead of panicking in println!. Every other command
    // keeps Rust's SIG_IGN: they live on sockets (serve, agent, network
    // libraries), and rustls writes with writev(2), which has no
    // MSG_NOSIGNAL, so a peer closing a connection would kill the process
    // (it killed `ferry serve` mid-deploy) instead of failing one request.
    if matches!(args.cmd, Cmd::Image(_)) {
        // SAFETY: no thread has started yet; SIG_DFL is a valid disposition.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    cli::init_logging(args.verbose);
    let result = match args.cmd {
        Cmd::Capture(c) => cli::capture::run(&args.library, c),
        Cmd::Restore(c) => cli::restore::run(&args.library, c),
        Cmd::Image(c) => cli::image::run(&args.library, c),
        Cmd::Survey(c) => cli::survey::run(c),
        Cmd::Adapt(c) => cli::adapt::run(c),
        Cmd::Plan(c) => cli::deploy::run_plan(&args.library, c),
        Cmd::Deploy(c) => cli::deploy::run_deploy(&args.library, c),
        Cmd::Migrate(c) => cli::migrate::run(c),
        Cmd::Drivers(c) => cli::drivers::run(c),
        Cmd::Agent(c) => cli::agent::run(c),
        Cmd::Boot(c) => cli::boot::run(c),
        Cmd::Serve(c) => cli::serve::run(&args.library, c),
        Cmd::Agents(c) => cli::agents::run(c),
        Cmd::Jobs(c) => cli::jobs::run_list(c),
        Cmd::Job(c) => cli::jobs::run_one(c),
        Cmd::FirstBoot(c) => cli::first_boot::run(c),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ferry: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
