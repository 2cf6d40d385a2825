//! `ferry drivers add | match | ls`: the driver library and driver plans.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use drivers_db::plan::FirmwareSource;
use drivers_db::{DriverLibrary, DriverPlan, KernelModules, ModuleSource, Planner};
use serde::Serialize;

use super::print_json;

/// Arguments of `ferry drivers`.
#[derive(clap::Args)]
pub struct DriversArgs {
    /// The driver library: kernel module trees per kernel version.
    #[arg(
        long,
        global = true,
        env = "FERRY_DRIVERS",
        default_value = "./ferry-drivers",
        value_name = "DIR"
    )]
    drivers: PathBuf,
    #[command(subcommand)]
    cmd: DriversCmd,
}

/// `ferry drivers` subcommands.
#[derive(clap::Subcommand)]
pub enum DriversCmd {
    /// Add a kernel's modules to the driver library, from a Debian
    /// linux-image .deb or a /lib/modules/VERSION directory. Adding a
    /// version again replaces it.
    Add {
        /// The .deb file or the module directory.
        source: PathBuf,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Which modules a machine's devices need, in load order, and where
    /// each comes from. Fails when a needed module is nowhere.
    Match {
        /// The image's kernel version (`uname -r` of the deployed OS).
        #[arg(long, value_name = "VERSION")]
        kernel: String,
        /// A device modalias (repeat for each device; give both layers of a
        /// virtio device if known).
        #[arg(long = "modalias", value_name = "MODALIAS", required = true)]
        modaliases: Vec<String>,
        /// The image's kernel tree (its /lib/modules/VERSION); the driver
        /// library fills its gaps. Without it, the library's tree of
        /// VERSION is used.
        #[arg(long, value_name = "DIR")]
        kernel_tree: Option<PathBuf>,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the kernels in the driver library.
    Ls {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a `ferry drivers` subcommand.
pub fn run(args: DriversArgs) -> anyhow::Result<ExitCode> {
    match args.cmd {
        DriversCmd::Add { source, json } => add(&args.drivers, &source, json),
        DriversCmd::Match {
            kernel,
            modaliases,
            kernel_tree,
            json,
        } => match_devices(
            &args.drivers,
            &kernel,
            &modaliases,
            kernel_tree.as_deref(),
            json,
        ),
        DriversCmd::Ls { json } => ls(&args.drivers, json),
    }
}

fn open(dir: &Path) -> anyhow::Result<DriverLibrary> {
    DriverLibrary::open(dir).with_context(|| format!("opening driver library {}", dir.display()))
}

fn add(dir: &Path, source: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let library = DriverLibrary::create(dir)
        .with_context(|| format!("creating driver library {}", dir.display()))?;
    let report = if source.is_dir() {
        library.add_tree(source)
    } else {
        tracing::info!("unpacking {}", source.display());
        library.add_deb(source)
    }
    .with_context(|| format!("adding {} to {}", source.display(), dir.display()))?;
    if json {
        print_json(&report)?;
        return Ok(ExitCode::SUCCESS);
    }
    for kernel in &report.kernels {
        let how = match &kernel.depmod_note {
            Some(note) => format!("indexes {}: {note}", kernel.indexes),
            None => format!("indexes {}", kernel.indexes),
        };
        println!(
            "{} kernel {}: {} modules in {} ({how})",
            if kernel.replaced { "replaced" } else { "added" },
            kernel.version,
            kernel.modules,
            kernel.path.display()
        );
    }
    for skipped in &report.skipped {
        println!("skipped {}: {}", skipped.entry, skipped.reason);
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct KernelRow {
    version: String,
    modules: usize,
    path: PathBuf,
}

fn ls(dir: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let library = open(dir)?;
    let mut rows = Vec::new();
    for version in library.kernels()? {
        let modules = library.load(&version)?.loadable_modules().len();
        rows.push(KernelRow {
            path: library.tree(&version),
            version,
            modules,
        });
    }
    if json {
        print_json(&rows)?;
    } else {
        for row in &rows {
            println!("{:<28} {:>6} modules", row.version, row.modules);
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct MatchOutput<'a> {
    kernel: &'a str,
    kernel_tree: PathBuf,
    library: Option<PathBuf>,
    #[serde(flatten)]
    plan: &'a DriverPlan,
}

fn match_devices(
    dir: &Path,
    kernel: &str,
    modaliases: &[String],
    kernel_tree: Option<&Path>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let planning = || format!("planning drivers for kernel {kernel}");
    let (plan, tree, library_tree) = match kernel_tree {
        Some(tree) => {
            let canonical = tree.canonicalize().ok();
            let named = canonical.as_deref().and_then(Path::file_name);
            if let Some(named) = named.filter(|n| *n != kernel) {
                bail!(
                    "the kernel tree {} is not for kernel {kernel} (its directory is named {})",
                    tree.display(),
                    named.to_string_lossy()
                );
            }
            let image = KernelModules::load(tree)
                .with_context(|| format!("loading the image's kernel tree {}", tree.display()))?;
            // Here the library only fills gaps: it may be absent, or lack
            // this kernel.
            let library = match DriverLibrary::open(dir) {
                Ok(lib) if lib.kernels()?.iter().any(|k| k == kernel) => {
                    Some((lib.load(kernel)?, lib.firmware_dir()))
                }
                Ok(_) => {
                    tracing::info!(
                        "the driver library {} has no kernel {kernel}: using the image's tree alone",
                        dir.display()
                    );
                    None
                }
                Err(_) => None,
            };
            let mut planner = Planner::new(&image);
            if let Some((lib_tree, firmware)) = &library {
                planner = planner.with_library(lib_tree, firmware.clone());
            }
            let plan = planner.plan(modaliases).with_context(planning)?;
            let library_tree = library.map(|(lib_tree, _)| lib_tree.root().to_path_buf());
            (plan, image.root().to_path_buf(), library_tree)
        }
        None => {
            let library = open(dir)?;
            let lib_tree = library.load(kernel)?;
            let plan = Planner::library_only(&lib_tree, library.firmware_dir())
                .plan(modaliases)
                .with_context(planning)?;
            let root = lib_tree.root().to_path_buf();
            (plan, root.clone(), Some(root))
        }
    };
    let output = MatchOutput {
        kernel,
        kernel_tree: tree,
        library: library_tree,
        plan: &plan,
    };
    if json {
        print_json(&output)?;
    } else {
        print_plan(&output);
    }
    if !plan.missing.is_empty() {
        let list: Vec<String> = plan
            .missing
            .iter()
            .map(|m| format!("{} (for {})", m.name, m.needed_by.join(", ")))
            .collect();
        bail!(
            "kernel {kernel}: {} needed module(s) are neither in {} nor in the driver library {}: {}",
            list.len(),
            output.kernel_tree.display(),
            dir.display(),
            list.join("; ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn print_plan(out: &MatchOutput) {
    println!("kernel {} (tree {})", out.kernel, out.kernel_tree.display());
    if let Some(library) = &out.library {
        println!("driver library tree {}", library.display());
    }
    println!("devices:");
    for device in &out.plan.devices {
        let claimed = if device.claimed_by.is_empty() {
            "unclaimed".to_owned()
        } else {
            device.claimed_by.join(", ")
        };
        match &device.derived_from {
            Some(pci) => println!(
                "  {}  {claimed}  (virtio bus, derived from {pci})",
                device.modalias
            ),
            None => println!("  {}  {claimed}", device.modalias),
        }
    }
    println!("modules, in load order:");
    for module in &out.plan.modules {
        let (kind, path) = match &module.source {
            ModuleSource::Builtin => ("builtin", String::new()),
            ModuleSource::Image { path } => ("image", path.display().to_string()),
            ModuleSource::Library { path } => ("library", path.display().to_string()),
            ModuleSource::Missing => ("MISSING", String::new()),
        };
        println!("  {:<24} {kind:<8} {path}", module.name);
    }
    if !out.plan.firmware.is_empty() {
        println!("firmware:");
        for fw in &out.plan.firmware {
            let source = match &fw.source {
                FirmwareSource::Image { path } => format!("image {}", path.display()),
                FirmwareSource::Library { path } => format!("library {}", path.display()),
                FirmwareSource::Absent => "absent".to_owned(),
            };
            println!("  {} ({}): {source}", fw.name, fw.module);
        }
    }
}
