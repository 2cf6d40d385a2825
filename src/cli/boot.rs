//! `ferry boot`: the media that bring the agent onto a machine: the
//! ramdisk (`initramfs`), a hybrid ISO (`iso`) and a network-boot
//! directory (`pxe`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use boot::initramfs::{self, Compression, InitramfsOptions};

use super::bytes;

/// `ferry boot` subcommands.
#[derive(clap::Subcommand)]
pub enum BootCmd {
    /// Write the agent's ramdisk (a compressed newc cpio).
    Initramfs(InitramfsArgs),
    /// Write a hybrid ISO (BIOS and UEFI; CD, USB stick or disk).
    Iso(IsoArgs),
    /// Write a network-boot directory (kernel, ramdisk, boot.ipxe,
    /// grub.cfg, pxelinux.cfg/default).
    Pxe(PxeArgs),
    /// Move this running Linux machine onto the ferry agent: install the
    /// agent's kernel and initramfs, then kexec into them now or boot them
    /// once through GRUB (the boot after that returns to this OS).
    Swap(super::boot_swap::SwapArgs),
}

/// What every medium's ramdisk is built from.
#[derive(clap::Args)]
pub struct RamdiskArgs {
    /// The kernel (default: the newest /boot/vmlinuz-* with a module tree,
    /// from Debian's linux-image-amd64).
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// The kernel's module tree (default: /lib/modules/VERSION of the
    /// default kernel).
    #[arg(long)]
    modules: Option<PathBuf>,
    /// The static ferry that becomes /init (default: this ferry if static,
    /// else the musl build beside it: target/x86_64-unknown-linux-musl/release/ferry).
    #[arg(long)]
    agent: Option<PathBuf>,
    /// The static busybox.
    #[arg(long, default_value = "/bin/busybox")]
    busybox: PathBuf,
    /// An agent configuration (JSON) to embed as /etc/ferry/agent.json.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Leave this module out (repeatable).
    #[arg(long = "exclude-module", value_name = "NAME")]
    exclude_modules: Vec<String>,
    /// zstd (default), gzip or none.
    #[arg(long, default_value = "zstd")]
    compression: String,
}

/// `ferry boot initramfs`.
#[derive(clap::Args)]
pub struct InitramfsArgs {
    /// The file to write.
    #[arg(long, short)]
    output: PathBuf,
    #[command(flatten)]
    ramdisk: RamdiskArgs,
}

/// `ferry boot iso`.
#[derive(clap::Args)]
pub struct IsoArgs {
    /// The ISO to write.
    #[arg(long, short)]
    output: PathBuf,
    /// Use this ramdisk instead of building one.
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// Extra kernel command-line arguments (`ferry.server=…`).
    #[arg(long, default_value = "")]
    cmdline: String,
    /// Seconds grub's menu waits.
    #[arg(long, default_value_t = 1)]
    timeout: u32,
    #[command(flatten)]
    ramdisk: RamdiskArgs,
}

/// `ferry boot pxe`.
#[derive(clap::Args)]
pub struct PxeArgs {
    /// The directory to fill.
    #[arg(long, short)]
    output: PathBuf,
    /// The mailbox server the agent reports to (adds ferry.server=URL).
    #[arg(long)]
    server: Option<String>,
    /// Use this ramdisk instead of building one.
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// Extra kernel command-line arguments.
    #[arg(long, default_value = "")]
    cmdline: String,
    #[command(flatten)]
    ramdisk: RamdiskArgs,
}

/// Runs `ferry boot`.
pub fn run(cmd: BootCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        BootCmd::Swap(a) => return super::boot_swap::run(a),
        BootCmd::Initramfs(a) => {
            let (_, modules) = kernel_and_modules(&a.ramdisk)?;
            build_initramfs(&a.ramdisk, &modules, &a.output)?;
        }
        BootCmd::Iso(a) => {
            let (kernel, initrd, _keep) = kernel_and_initrd(&a.ramdisk, a.initrd.as_deref())?;
            boot::iso::build(&boot::iso::IsoOptions {
                kernel,
                initrd,
                cmdline: cmdline(&a.cmdline),
                output: a.output.clone(),
                timeout: a.timeout,
            })
            .with_context(|| format!("writing {}", a.output.display()))?;
            report_file(&a.output)?;
        }
        BootCmd::Pxe(a) => {
            let (kernel, initrd, _keep) = kernel_and_initrd(&a.ramdisk, a.initrd.as_deref())?;
            let mut extra = a.cmdline.clone();
            if let Some(s) = &a.server {
                extra = format!("ferry.server={s} {extra}");
            }
            boot::pxe::build(&boot::pxe::PxeOptions {
                kernel,
                initrd,
                cmdline: cmdline(&extra),
                output: a.output.clone(),
            })
            .with_context(|| format!("writing {}", a.output.display()))?;
            println!(
                "{}: vmlinuz, initrd.img, boot.ipxe, grub.cfg, pxelinux.cfg/default",
                a.output.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn cmdline(extra: &str) -> String {
    format!("{} {}", boot::BASE_CMDLINE, extra)
        .trim()
        .to_string()
}

fn report_file(p: &Path) -> anyhow::Result<()> {
    let len = std::fs::metadata(p)
        .with_context(|| format!("reading {}", p.display()))?
        .len();
    println!("{}: {}", p.display(), bytes(len));
    Ok(())
}

fn kernel_and_modules(a: &RamdiskArgs) -> anyhow::Result<(PathBuf, PathBuf)> {
    match (&a.kernel, &a.modules) {
        (Some(k), Some(m)) => Ok((k.clone(), m.clone())),
        (None, None) => Ok(boot::modules::default_kernel(Path::new("/"))?),
        (Some(_), None) => {
            bail!("--kernel needs --modules (the module tree built for that kernel)")
        }
        (None, Some(m)) => {
            let v = boot::modules::version_of(m);
            let k = PathBuf::from(format!("/boot/vmlinuz-{v}"));
            if !k.is_file() {
                bail!(
                    "--modules {}: no {} for it; pass --kernel",
                    m.display(),
                    k.display()
                );
            }
            Ok((k, m.clone()))
        }
    }
}

/// The kernel, and the ramdisk (built into a temporary file unless given).
fn kernel_and_initrd(
    a: &RamdiskArgs,
    initrd: Option<&Path>,
) -> anyhow::Result<(PathBuf, PathBuf, Option<tempfile::TempDir>)> {
    let (kernel, modules) = kernel_and_modules(a)?;
    if let Some(i) = initrd {
        return Ok((kernel, i.to_path_buf(), None));
    }
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let out = dir.path().join("initrd.img");
    build_initramfs(a, &modules, &out)?;
    Ok((kernel, out, Some(dir)))
}

fn default_agent() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("finding this ferry's path")?;
    if initramfs::is_static(&exe)? {
        return Ok(exe);
    }
    // target/release/ferry → target/x86_64-unknown-linux-musl/release/ferry
    let musl = exe
        .parent()
        .and_then(Path::parent)
        .map(|t| t.join("x86_64-unknown-linux-musl/release/ferry"));
    match musl {
        Some(m) if m.is_file() => Ok(m),
        _ => bail!(
            "{} is dynamically linked and no static build is beside it; build one with boot/build-agent.sh and pass --agent",
            exe.display()
        ),
    }
}

fn build_initramfs(a: &RamdiskArgs, modules: &Path, out: &Path) -> anyhow::Result<()> {
    let agent = match &a.agent {
        Some(p) => p.clone(),
        None => default_agent()?,
    };
    let mut opts = InitramfsOptions::new(agent, modules.to_path_buf(), a.busybox.clone());
    opts.exclude_modules = a.exclude_modules.clone();
    opts.compression = match a.compression.as_str() {
        "zstd" => Compression::Zstd,
        "gzip" => Compression::Gzip,
        "none" => Compression::None,
        other => bail!("--compression {other}: expected zstd, gzip or none"),
    };
    if let Some(c) = &a.config {
        let data = std::fs::read(c).with_context(|| format!("reading {}", c.display()))?;
        serde_json::from_slice::<agent::ramdisk::AgentConfig>(&data)
            .with_context(|| format!("{} is not a valid agent configuration", c.display()))?;
        opts.config = Some(data);
    }
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?,
    );
    let r = initramfs::build(&opts, &mut file)
        .with_context(|| format!("building {}", out.display()))?;
    std::io::Write::flush(&mut file).with_context(|| format!("writing {}", out.display()))?;
    let parts: Vec<String> = r
        .parts
        .iter()
        .map(|(k, v)| format!("{k} {}", bytes(*v)))
        .collect();
    eprintln!(
        "initramfs {}: kernel {}, {} modules, {} programs, {} libraries; {} ({}) → {} {}",
        out.display(),
        r.kernel_version,
        r.modules,
        r.programs.len(),
        r.libraries,
        bytes(r.cpio_bytes),
        parts.join(", "),
        bytes(r.compressed_bytes),
        a.compression
    );
    if !r.skipped_programs.is_empty() {
        eprintln!(
            "initramfs: not on this host, left out: {}",
            r.skipped_programs.join(" ")
        );
    }
    Ok(())
}
