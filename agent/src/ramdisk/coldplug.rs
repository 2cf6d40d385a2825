//! Coldplug: load the ramdisk's kernel modules for the devices present.
//!
//! Each round surveys ROOT/sys, matches every device modalias (PCI and the
//! other buses: virtio, scsi, vmbus, xen, …, plus the virtio-bus modalias
//! each virtio PCI function will register) against the ramdisk's
//! `modules.alias` with drivers-db, and loads what is not loaded yet, in
//! dependency order ([`KernelModules::closure`]; no module file is opened
//! to plan, which matters under emulation), with `init_module(2)` (modules compressed with xz,
//! zstd or gzip are decompressed in-process). Loading a bus driver reveals
//! new devices (virtio_pci → the virtio block and net devices; ahci → SCSI
//! disks needing sd_mod), so rounds repeat until one loads nothing new.
//! A module that fails to load is recorded and not retried: a driver
//! refusing a device must not stop the others.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

use drivers_db::compression::{read_bounded, Compression};
use drivers_db::{virtio_bus_modalias, KernelModules};

use crate::survey::{self, HardwareSurvey};

/// The largest module accepted after decompression.
const MAX_MODULE: u64 = 256 << 20;

/// Modules loaded by name whatever the hardware: the file systems deploy
/// and adapt mount. Loaded after `ready` (see `bring_up`): nothing before
/// the first command needs them, and ext4 and xfs are the slowest to load.
pub const ALWAYS: &[&str] = &[
    "ext4",
    "xfs",
    "vfat",
    "nls_cp437",
    "nls_utf8",
    "nls_ascii",
    "efivarfs",
];

/// What coldplug did.
#[derive(Clone, Debug, Default)]
pub struct Coldplug {
    /// Modules loaded, in order.
    pub loaded: Vec<String>,
    /// Modules that would be loaded (dry run).
    pub planned: Vec<String>,
    /// Modules that failed, with why.
    pub failed: BTreeMap<String, String>,
    /// Rounds run.
    pub rounds: u32,
    /// Modules that took over 300 ms to load (driver probes that wait,
    /// big modules under emulation), with the milliseconds.
    pub slow: Vec<(String, u128)>,
}

/// Every device modalias in a survey.
pub fn modaliases(s: &HardwareSurvey) -> Vec<String> {
    let mut seen = BTreeSet::new();
    s.pci
        .iter()
        .filter_map(|d| d.modalias.clone())
        .flat_map(|m| {
            let v = virtio_bus_modalias(&m);
            std::iter::once(m).chain(v)
        })
        .chain(s.devices.iter().filter_map(|d| d.modalias.clone()))
        .filter(|m| seen.insert(m.clone()))
        .collect()
}

fn is_loaded(root: &Path, module: &str) -> bool {
    root.join("sys/module").join(module).exists()
}

/// Loads one module file.
fn load_file(path: &Path) -> Result<(), String> {
    let mut f =
        std::fs::File::open(path).map_err(|e| format!("opening {}: {e}", path.display()))?;
    let mut head = [0u8; 6];
    let n = f
        .read(&mut head)
        .map_err(|e| format!("reading {}: {e}", path.display()))?;
    let all = std::fs::File::open(path).map_err(|e| format!("opening {}: {e}", path.display()))?;
    let reader = Compression::detect(&head[..n])
        .decoder(all)
        .map_err(|e| format!("decoding {}: {e}", path.display()))?;
    let data = read_bounded(reader, MAX_MODULE)
        .map_err(|e| format!("decoding {}: {e}", path.display()))?
        .map_err(|_| format!("{}: over {MAX_MODULE} bytes decompressed", path.display()))?;
    match nix::kmod::init_module(&data, c"") {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(()),
        Err(e) => Err(format!("init_module {}: {e}", path.display())),
    }
}

/// One coldplug pass over `root` with modules from `tree` (see the module
/// documentation). `load` false only plans (for tests outside a ramdisk).
/// `extra` names modules to load whatever the devices.
pub fn run(root: &Path, tree: &KernelModules, load: bool, extra: &[&str], report: &mut Coldplug) {
    for _ in 0..8 {
        report.rounds += 1;
        let Ok(s) = survey::survey(root) else {
            return;
        };
        let mut wanted: Vec<String> = Vec::new();
        for alias in modaliases(&s) {
            for m in tree.match_modalias(&alias) {
                if !wanted.contains(&m) {
                    wanted.push(m);
                }
            }
        }
        wanted.extend(extra.iter().map(|m| m.to_string()));
        let mut new = 0;
        for m in tree.closure(&wanted) {
            if report.loaded.contains(&m)
                || report.planned.contains(&m)
                || report.failed.contains_key(&m)
                || is_loaded(root, &m)
            {
                continue;
            }
            let Some(file) = tree.module_file(&m) else {
                continue;
            };
            if !load {
                report.planned.push(m);
                continue;
            }
            let t = std::time::Instant::now();
            match load_file(&file) {
                Ok(()) => {
                    let ms = t.elapsed().as_millis();
                    if ms > 300 {
                        report.slow.push((m.clone(), ms));
                    }
                    report.loaded.push(m);
                    new += 1;
                }
                Err(e) => {
                    report.failed.insert(m, e);
                }
            }
        }
        if new == 0 {
            return;
        }
        // Let the new drivers probe and register their devices.
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
