//! Which kernel modules go into the agent's ramdisk, chosen with drivers-db
//! from a kernel's module tree.
//!
//! The selection list (`initramfs/modules.txt`, embedded) holds path globs
//! (a `/` in the pattern: matched against the module's path relative to
//! the tree) and module-name globs. Every matching loadable module of the
//! tree is taken, then its dependency closure ([`KernelModules::closure`]:
//! `modules.dep` and softdeps); excluded names are dropped last (a test
//! builds a ramdisk without `virtio_blk` this way). [`stage`] copies the
//! files into a fresh tree (compressing uncompressed modules with zstd) and regenerates `modules.alias`, `modules.dep`
//! and `modules.softdep` for just that subset with drivers-db's depmod, so
//! the agent's coldplug matches devices against what the ramdisk holds.
//! `modules.builtin` and `modules.builtin.modinfo` are copied as they are.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use drivers_db::modalias::normalize_module_name;
use drivers_db::{KernelModules, Pattern};

use crate::BootError;

/// The embedded default selection (`initramfs/modules.txt`).
pub const DEFAULT_LIST: &str = include_str!("../../initramfs/modules.txt");

/// The modules chosen from one tree.
#[derive(Debug, Clone)]
pub struct Selection {
    /// The tree (`/lib/modules/VERSION`).
    pub tree: PathBuf,
    /// Module files, relative to the tree, sorted.
    pub files: Vec<PathBuf>,
    /// Their names, sorted.
    pub names: BTreeSet<String>,
    /// List patterns that matched nothing in this tree (a name list entry
    /// for a module this kernel builds in, or lacks).
    pub unmatched: Vec<String>,
}

/// Chooses modules from `tree` by `list` (see the module documentation),
/// leaving out `exclude` (module names).
pub fn select(tree: &Path, list: &str, exclude: &[String]) -> Result<Selection, BootError> {
    let km = KernelModules::load(tree).map_err(|source| BootError::Modules {
        tree: tree.to_path_buf(),
        source,
    })?;
    let names = km.loadable_modules();
    let mut wanted = Vec::new();
    let mut unmatched = Vec::new();
    for line in list.lines() {
        let pattern = line.split('#').next().unwrap_or("").trim();
        if pattern.is_empty() {
            continue;
        }
        let before = wanted.len();
        if pattern.contains('/') {
            let glob = Pattern::new(pattern);
            for name in &names {
                let path = km.module_path(name).map(|p| p.display().to_string());
                if path.is_some_and(|p| glob.matches(&p)) {
                    wanted.push((*name).to_string());
                }
            }
        } else {
            let glob = Pattern::new(&normalize_module_name(pattern));
            wanted.extend(
                names
                    .iter()
                    .filter(|n| glob.matches(n))
                    .map(|n| n.to_string()),
            );
        }
        if wanted.len() == before && !km.is_builtin(&normalize_module_name(pattern)) {
            unmatched.push(pattern.to_string());
        }
    }
    let exclude: BTreeSet<String> = exclude.iter().map(|e| normalize_module_name(e)).collect();
    let chosen: BTreeSet<String> = km
        .closure(&wanted)
        .into_iter()
        .filter(|m| !exclude.contains(m))
        .collect();
    let mut files: Vec<PathBuf> = chosen
        .iter()
        .filter_map(|m| km.module_path(m).map(Path::to_path_buf))
        .collect();
    files.sort();
    Ok(Selection {
        tree: tree.to_path_buf(),
        files,
        names: chosen,
        unmatched,
    })
}

/// zstd level for modules: per-file compression keeps the ramdisk the
/// kernel unpacks at boot ~3x smaller (under emulation, unpacking 80 MB of
/// modules costs seconds); the agent decompresses only those it loads.
const MODULE_ZSTD_LEVEL: i32 = 15;

/// Copies the selection into `dest` (uncompressed `.ko` files become
/// `.ko.zst`) (a new `…/modules/VERSION` directory)
/// with regenerated indexes; returns how many modules it indexed.
pub fn stage(sel: &Selection, dest: &Path) -> Result<usize, BootError> {
    for rel in &sel.files {
        let from = sel.tree.join(rel);
        let uncompressed = rel.extension().is_some_and(|e| e == "ko");
        let to = if uncompressed {
            dest.join(format!("{}.zst", rel.display()))
        } else {
            dest.join(rel)
        };
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(BootError::io("creating", parent))?;
        }
        if uncompressed {
            let data = std::fs::read(&from).map_err(BootError::io("reading", &from))?;
            let z = zstd::bulk::compress(&data, MODULE_ZSTD_LEVEL)
                .map_err(BootError::io("compressing", &from))?;
            std::fs::write(&to, z).map_err(BootError::io("writing", &to))?;
        } else {
            std::fs::copy(&from, &to).map_err(BootError::io("copying", &from))?;
        }
    }
    for name in [
        "modules.builtin",
        "modules.builtin.modinfo",
        "modules.order",
    ] {
        let from = sel.tree.join(name);
        if from.is_file() {
            std::fs::copy(&from, dest.join(name)).map_err(BootError::io("copying", &from))?;
        }
    }
    drivers_db::depmod::generate_indexes(dest).map_err(|source| BootError::Depmod {
        tree: dest.to_path_buf(),
        source,
    })
}

/// The kernel version of a module tree: its directory name.
pub fn version_of(tree: &Path) -> String {
    tree.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Compares kernel versions as people do (`6.1.0-9` < `6.1.0-10`): runs of
/// digits by value, everything else by bytes.
pub fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn parts(s: &str) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        let mut digits = String::new();
        let mut other = String::new();
        for c in s.chars() {
            if c.is_ascii_digit() {
                if !other.is_empty() {
                    out.push((0, std::mem::take(&mut other)));
                }
                digits.push(c);
            } else {
                if !digits.is_empty() {
                    out.push((digits.parse().unwrap_or(u64::MAX), String::new()));
                    digits.clear();
                }
                other.push(c);
            }
        }
        if !digits.is_empty() {
            out.push((digits.parse().unwrap_or(u64::MAX), String::new()));
        }
        if !other.is_empty() {
            out.push((0, other));
        }
        out
    }
    parts(a).cmp(&parts(b))
}

/// The newest kernel installed on the system at `root`: its
/// `boot/vmlinuz-VERSION` and `lib/modules/VERSION`, for the newest
/// VERSION that has both.
pub fn default_kernel(root: &Path) -> Result<(PathBuf, PathBuf), BootError> {
    let boot = root.join("boot");
    let mut versions: Vec<String> = std::fs::read_dir(&boot)
        .map_err(BootError::io("listing", &boot))?
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_prefix("vmlinuz-")
                .map(String::from)
        })
        .filter(|v| {
            root.join("lib/modules")
                .join(v)
                .join("modules.dep")
                .is_file()
        })
        .collect();
    versions.sort_by(|a, b| version_cmp(a, b));
    let v = versions
        .pop()
        .ok_or_else(|| BootError::NoKernel { boot: boot.clone() })?;
    Ok((
        boot.join(format!("vmlinuz-{v}")),
        root.join("lib/modules").join(v),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_numerically() {
        use std::cmp::Ordering::*;
        assert_eq!(version_cmp("6.1.0-9-amd64", "6.1.0-10-amd64"), Less);
        assert_eq!(version_cmp("6.10.0-1", "6.9.0-1"), Greater);
        assert_eq!(version_cmp("6.1.0-56-amd64", "6.1.0-56-amd64"), Equal);
    }

    #[test]
    fn host_tree_selection_covers_the_named_drivers() {
        let Ok((_, tree)) = default_kernel(Path::new("/")) else {
            eprintln!("SKIP: no kernel in /boot with /lib/modules (package linux-image-amd64)");
            return;
        };
        let sel = select(&tree, DEFAULT_LIST, &["virtio_blk".into()]).expect("host tree");
        for m in [
            "virtio_pci",
            "virtio_net",
            "nvme",
            "ahci",
            "ata_piix",
            "mpt3sas",
            "megaraid_sas",
            "hv_storvsc",
            "hv_netvsc",
            "xen_blkfront",
            "xen_netfront",
            "e1000",
            "e1000e",
            "igb",
            "ixgbe",
            "i40e",
            "vmxnet3",
            "ena",
            "ext4",
            "xfs",
            "vfat",
            "sd_mod",
            "jbd2",
        ] {
            assert!(sel.names.contains(m), "{m} missing from the selection");
        }
        assert!(!sel.names.contains("virtio_blk"), "excluded module kept");
        // Not the whole tree: no sound, no GPU drivers.
        assert!(!sel.names.contains("snd_hda_intel") && !sel.names.contains("amdgpu"));
        assert!(sel.files.iter().all(|f| tree.join(f).is_file()));
    }
}
