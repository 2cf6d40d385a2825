//! Which kernel modules the target's new hardware needs, and getting them
//! into the target: drivers-db's [`Planner`] matches the hardware's
//! modaliases (both virtio layers) against the *image's* kernel tree, and
//! takes what the image lacks from the driver library's tree of that exact
//! kernel version. This module copies those files (and the firmware they
//! name) into the target and runs the target's `depmod`.

use std::path::{Path, PathBuf};

use drivers_db::library::DriverLibrary;
use drivers_db::plan::{DriverPlan, FirmwareSource, ModuleSource, Planner};
use drivers_db::KernelModules;

use super::changes::Changes;
use super::chroot::Chroot;
use super::detect::Kernel;
use super::AdaptError;

fn drivers_err(e: impl std::fmt::Display) -> AdaptError {
    AdaptError::Drivers(e.to_string())
}

/// The plan for `kernel` of the target at `root` and `modaliases`, with
/// the driver library at `library` filling gaps.
pub fn plan(
    root: &Path,
    kernel: &Kernel,
    modaliases: &[String],
    library: Option<&Path>,
) -> Result<DriverPlan, AdaptError> {
    let image = KernelModules::load(&kernel.modules_on_host(root)).map_err(drivers_err)?;
    let lib = library
        .map(DriverLibrary::open)
        .transpose()
        .map_err(drivers_err)?;
    let lib_tree = match &lib {
        Some(l) if l.tree(&kernel.version).join("modules.dep").is_file() => {
            Some(l.load(&kernel.version).map_err(drivers_err)?)
        }
        _ => None,
    };
    let mut planner = Planner::new(&image).with_image_firmware(Some(root.join("lib/firmware")));
    if let (Some(l), Some(t)) = (&lib, &lib_tree) {
        planner = planner.with_library(t, l.firmware_dir());
    }
    planner.plan(modaliases).map_err(drivers_err)
}

/// The modules to load (not built in), in load order.
pub fn loadable(plan: &DriverPlan) -> Vec<String> {
    plan.modules
        .iter()
        .filter(|m| {
            matches!(
                m.source,
                ModuleSource::Image { .. } | ModuleSource::Library { .. }
            )
        })
        .map(|m| m.name.clone())
        .collect()
}

/// Copies the library's modules and firmware into the target and runs
/// `depmod` there; returns whether anything was copied.
pub fn install(
    changes: &mut Changes,
    chroot: &Chroot,
    kernel: &Kernel,
    plan: &DriverPlan,
    library: Option<&Path>,
) -> Result<bool, AdaptError> {
    let Some(library) = library else {
        return Ok(false);
    };
    let tree: PathBuf = library.join(&kernel.version);
    let firmware = library.join("firmware");
    let mut copied = false;
    let copy = |changes: &mut Changes,
                src: &Path,
                dest: String,
                reason: String|
     -> Result<bool, AdaptError> {
        let data = std::fs::read(src).map_err(|e| AdaptError::Io {
            action: "reading",
            path: src.display().to_string(),
            source: e,
        })?;
        changes.write(&dest, &data, 0o644, &reason, Vec::new())
    };
    for m in &plan.modules {
        let ModuleSource::Library { path } = &m.source else {
            continue;
        };
        let rel = path.strip_prefix(&tree).map_err(|_| {
            AdaptError::Internal(format!(
                "{} is not in the library's tree {}",
                path.display(),
                tree.display()
            ))
        })?;
        let dest = format!(
            "{}/{}",
            kernel.modules.trim_start_matches('/'),
            rel.display()
        );
        copied |= copy(
            changes,
            path,
            dest,
            format!("module {} from the driver library", m.name),
        )?;
    }
    let fw_dir = firmware_dir(changes);
    for f in &plan.firmware {
        let FirmwareSource::Library { path } = &f.source else {
            continue;
        };
        let rel = path.strip_prefix(&firmware).unwrap_or(Path::new(&f.name));
        copy(
            changes,
            path,
            format!("{fw_dir}/{}", rel.display()),
            format!("firmware {} for {}", f.name, f.module),
        )?;
    }
    if copied {
        let dir = kernel.modules.trim_start_matches('/').to_string();
        for f in DEPMOD_OUTPUTS {
            changes.expect_change(&format!("{dir}/{f}"), "depmod after adding modules")?;
        }
        chroot.run("depmod", &["-a", &kernel.version])?;
        changes.settle()?;
    }
    Ok(copied)
}

/// The target's firmware directory: `usr/lib/firmware` on a merged-/usr
/// system, never written through the `/lib` link.
fn firmware_dir(changes: &Changes) -> &'static str {
    if changes
        .path("usr/lib/firmware")
        .map(|p| p.is_dir())
        .unwrap_or(false)
    {
        "usr/lib/firmware"
    } else {
        "lib/firmware"
    }
}

/// The files `depmod` writes.
const DEPMOD_OUTPUTS: &[&str] = &[
    "modules.dep",
    "modules.dep.bin",
    "modules.alias",
    "modules.alias.bin",
    "modules.softdep",
    "modules.symbols",
    "modules.symbols.bin",
    "modules.builtin.bin",
    "modules.builtin.alias.bin",
    "modules.devname",
];
