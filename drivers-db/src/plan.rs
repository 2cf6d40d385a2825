//! A driver plan: for a machine's devices, which modules the image's kernel
//! must load, in which order, and where each module file comes from.
//!
//! Inputs are the devices' modaliases (both layers of a virtio device when
//! the survey saw them: `pci:v00001AF4d00001001…` and
//! `virtio:d00000002v00001AF4`), the image's own kernel tree (the kernel
//! the deployed OS boots, not the host's) and, optionally, the driver
//! library's tree of *the same kernel version*. The plan:
//!
//! - adds the virtio-bus modalias of every virtio PCI device whose virtio
//!   layer is not in the list ([`crate::virtio_bus_modalias`]);
//! - matches every modalias against the image's `modules.alias` and
//!   built-in aliases and the library's, so that a module deleted from the
//!   image together with its alias lines is still found;
//! - orders the claiming modules with their `modules.dep` dependencies and
//!   softdeps (`pre:` before, `post:` after), as modprobe would;
//! - says where each comes from: built into the image's kernel, a file in
//!   the image's tree, or, only when that file is absent, the library's
//!   tree; a module in neither is listed in [`DriverPlan::missing`], so the
//!   caller can refuse before changing anything;
//! - lists the firmware named by each module's `.modinfo`, found in the
//!   image's firmware directory (`TREE/../../firmware`, i.e. `/lib/firmware`
//!   or `/usr/lib/firmware`), the library's, or absent. Absent firmware is
//!   reported, not fatal: drivers name firmware for every variant they
//!   support. Firmware of built-in modules is not listed.
//!
//! Devices that no module claims (PCI bridges, host bridges, …) are listed
//! in [`DriverPlan::unclaimed`]; that is normal, not an error.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::ModinfoError;
use crate::matcher::{load_order, KernelModules, ModuleGraph, Node};
use crate::modalias::{normalize_alias, normalize_module_name, SoftDep};
use crate::modinfo::Modinfo;
use crate::virtio::virtio_bus_modalias;

/// Where a module of the plan comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ModuleSource {
    /// Compiled into the image's kernel: nothing to load or copy.
    Builtin,
    /// A file of the image's kernel tree.
    Image {
        /// Relative to the image's tree (`kernel/drivers/block/virtio_blk.ko`).
        path: PathBuf,
    },
    /// A file of the driver library's tree of the same kernel version,
    /// because the image lacks it.
    Library {
        /// The file in the library.
        path: PathBuf,
    },
    /// Claimed or needed, but in neither tree.
    Missing,
}

/// A device and the modules that claim it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DevicePlan {
    /// The device's modalias, as given or derived.
    pub modalias: String,
    /// For a virtio-bus modalias derived by the plan: the PCI modalias it
    /// comes from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub derived_from: Option<String>,
    /// The modules claiming it (image's aliases first, then the library's).
    pub claimed_by: Vec<String>,
    /// What loading them takes, in order (built-in modules left out).
    pub load: Vec<String>,
}

/// A module of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedModule {
    /// The normalised module name.
    pub name: String,
    /// Where it comes from.
    pub source: ModuleSource,
    /// Firmware its `.modinfo` names.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub firmware: Vec<String>,
}

/// Where a firmware file comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum FirmwareSource {
    /// The image's firmware directory has it.
    Image {
        /// The file found (possibly with `.xz` or `.zst` added).
        path: PathBuf,
    },
    /// The driver library's firmware directory has it.
    Library {
        /// The file found.
        path: PathBuf,
    },
    /// Neither has it.
    Absent,
}

/// A firmware file a planned module may request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedFirmware {
    /// The name, relative to `/lib/firmware`.
    pub name: String,
    /// The module naming it.
    pub module: String,
    /// Where it is.
    pub source: FirmwareSource,
}

/// A module the plan needs but cannot find.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MissingModule {
    /// The normalised module name.
    pub name: String,
    /// The device modaliases that need it.
    pub needed_by: Vec<String>,
}

/// The answer: what to load for a machine's devices, and from where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DriverPlan {
    /// Every device, in the order given, each derived virtio-bus modalias
    /// right after its PCI device.
    pub devices: Vec<DevicePlan>,
    /// The modules to load, in load order, then the built-in ones claimed.
    pub modules: Vec<PlannedModule>,
    /// Firmware the loadable modules name.
    pub firmware: Vec<PlannedFirmware>,
    /// Modaliases no module claims.
    pub unclaimed: Vec<String>,
    /// Modules needed but in neither tree: refuse to deploy while not empty.
    pub missing: Vec<MissingModule>,
}

impl DriverPlan {
    /// The names of the modules to load, in order (present or missing).
    pub fn load_order(&self) -> Vec<&str> {
        self.modules
            .iter()
            .filter(|m| m.source != ModuleSource::Builtin)
            .map(|m| m.name.as_str())
            .collect()
    }
}

/// Makes [`DriverPlan`]s for one image kernel (see the module documentation).
#[derive(Debug, Clone)]
pub struct Planner<'a> {
    image: &'a KernelModules,
    image_firmware: Option<PathBuf>,
    library: Option<&'a KernelModules>,
    library_firmware: Option<PathBuf>,
    /// The "image" tree is the library's own: its files are library files.
    library_only: bool,
}

/// The firmware directory beside a module tree: `…/lib/modules/VERSION` →
/// `…/lib/firmware`.
fn firmware_beside(tree: &Path) -> Option<PathBuf> {
    let dir = tree.parent()?.parent()?.join("firmware");
    dir.is_dir().then_some(dir)
}

/// Looks `name` up in a firmware directory, also compressed.
fn find_firmware(dir: Option<&Path>, name: &str) -> Option<PathBuf> {
    let dir = dir?;
    crate::staging::safe_relative(Path::new(name)).ok()?;
    ["", ".xz", ".zst"]
        .iter()
        .map(|suffix| dir.join(format!("{name}{suffix}")))
        .find(|path| path.is_file())
}

impl<'a> Planner<'a> {
    /// A planner for the image's kernel tree; the image's firmware is
    /// looked for beside the tree (`TREE/../../firmware`).
    pub fn new(image: &'a KernelModules) -> Self {
        Planner {
            image,
            image_firmware: firmware_beside(image.root()),
            library: None,
            library_firmware: None,
            library_only: false,
        }
    }

    /// A planner for a kernel known only from the driver library: `tree` is
    /// the library's tree of that version, and its modules and `firmware`
    /// are reported as coming from the library.
    pub fn library_only(tree: &'a KernelModules, firmware: PathBuf) -> Self {
        Planner {
            image: tree,
            image_firmware: None,
            library: None,
            library_firmware: firmware.is_dir().then_some(firmware),
            library_only: true,
        }
    }

    /// Fills the image's gaps from the driver library's tree of the same
    /// kernel version, and its firmware directory.
    pub fn with_library(mut self, tree: &'a KernelModules, firmware: PathBuf) -> Self {
        self.library = Some(tree);
        self.library_firmware = firmware.is_dir().then_some(firmware);
        self
    }

    /// Sets the image's firmware directory (`None`: do not look).
    pub fn with_image_firmware(mut self, dir: Option<PathBuf>) -> Self {
        self.image_firmware = dir;
        self
    }

    /// Where `module` comes from.
    pub fn source(&self, module: &str) -> ModuleSource {
        if self.image.is_builtin(module) {
            return ModuleSource::Builtin;
        }
        if let Some(file) = self.image.module_file(module) {
            if self.library_only {
                return ModuleSource::Library { path: file };
            }
            if let Some(path) = self.image.module_path(module) {
                return ModuleSource::Image {
                    path: path.to_path_buf(),
                };
            }
        }
        match self.library.and_then(|lib| lib.module_file(module)) {
            Some(path) => ModuleSource::Library { path },
            None => ModuleSource::Missing,
        }
    }

    /// The tree whose `modules.dep` describes `module`: the image's when it
    /// has the file (or no library does), else the library's.
    fn tree_for(&self, module: &str) -> &'a KernelModules {
        match self.library {
            Some(lib)
                if self.image.module_file(module).is_none()
                    && (lib.module_file(module).is_some() || !self.image.is_loadable(module)) =>
            {
                lib
            }
            _ => self.image,
        }
    }

    /// The modules claiming `modalias`: the image's, then the library's.
    fn claims(&self, modalias: &str) -> Vec<String> {
        let mut names: Vec<String> = self.image.match_modalias(modalias);
        for name in self
            .library
            .map(|l| l.match_modalias(modalias))
            .unwrap_or_default()
        {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }

    /// The devices to match: `modaliases` (trimmed, without duplicates)
    /// with the derived virtio-bus modaliases inserted.
    fn devices(modaliases: &[String]) -> Vec<(String, Option<String>)> {
        let given: BTreeSet<String> = modaliases
            .iter()
            .map(|m| normalize_alias(m.trim()))
            .collect();
        let mut seen = BTreeSet::new();
        let mut devices = Vec::new();
        for modalias in modaliases
            .iter()
            .map(|m| m.trim())
            .filter(|m| !m.is_empty())
        {
            if !seen.insert(normalize_alias(modalias)) {
                continue;
            }
            devices.push((modalias.to_owned(), None));
            if let Some(virtio) = virtio_bus_modalias(modalias) {
                if !given.contains(&normalize_alias(&virtio)) && seen.insert(virtio.clone()) {
                    devices.push((virtio, Some(modalias.to_owned())));
                }
            }
        }
        devices
    }

    /// Plans the modules for `modaliases` (see the module documentation).
    /// Fails only when a module file's `.modinfo` cannot be read.
    pub fn plan(&self, modaliases: &[String]) -> Result<DriverPlan, ModinfoError> {
        let mut devices = Vec::new();
        let mut unclaimed = Vec::new();
        let mut wanted = Vec::new();
        let mut needed_by: HashMap<String, Vec<String>> = HashMap::new();
        for (modalias, derived_from) in Self::devices(modaliases) {
            let claimed_by = self.claims(&modalias);
            if claimed_by.is_empty() {
                unclaimed.push(modalias.clone());
            }
            let walk = load_order(self, &claimed_by);
            let mut load = walk.order;
            load.extend(walk.unknown);
            for module in claimed_by.iter().chain(&load) {
                let users = needed_by.entry(module.clone()).or_default();
                if !users.contains(&modalias) {
                    users.push(modalias.clone());
                }
            }
            wanted.extend(claimed_by.iter().cloned());
            devices.push(DevicePlan {
                modalias,
                derived_from,
                claimed_by,
                load,
            });
        }
        let walk = load_order(self, &wanted);
        let mut names = walk.order;
        names.extend(walk.unknown);
        let builtin = wanted.iter().filter(|m| self.image.is_builtin(m)).fold(
            Vec::<String>::new(),
            |mut acc, m| {
                if !acc.contains(m) {
                    acc.push(m.clone());
                }
                acc
            },
        );
        names.extend(builtin);

        let mut modules = Vec::new();
        let mut firmware = Vec::new();
        let mut missing = Vec::new();
        for name in names {
            let source = self.source(&name);
            let file = match &source {
                ModuleSource::Image { path } => Some(self.image.root().join(path)),
                ModuleSource::Library { path } => Some(path.clone()),
                ModuleSource::Builtin => None,
                ModuleSource::Missing => {
                    missing.push(MissingModule {
                        name: name.clone(),
                        needed_by: needed_by.get(&name).cloned().unwrap_or_default(),
                    });
                    None
                }
            };
            let names_firmware = match file {
                Some(file) => Modinfo::read(&file)?.firmware,
                None => Vec::new(),
            };
            for fw in &names_firmware {
                let source = if let Some(path) = find_firmware(self.image_firmware.as_deref(), fw) {
                    FirmwareSource::Image { path }
                } else if let Some(path) = find_firmware(self.library_firmware.as_deref(), fw) {
                    FirmwareSource::Library { path }
                } else {
                    FirmwareSource::Absent
                };
                firmware.push(PlannedFirmware {
                    name: fw.clone(),
                    module: name.clone(),
                    source,
                });
            }
            modules.push(PlannedModule {
                name,
                source,
                firmware: names_firmware,
            });
        }
        Ok(DriverPlan {
            devices,
            modules,
            firmware,
            unclaimed,
            missing,
        })
    }
}

impl ModuleGraph for Planner<'_> {
    fn node(&self, module: &str) -> Node<'_> {
        if self.image.is_builtin(module) {
            return Node::Builtin;
        }
        match self.tree_for(module).dependencies(module) {
            Some(deps) => Node::Loadable(deps),
            None => Node::Unknown,
        }
    }

    fn soft(&self, module: &str) -> Option<&SoftDep> {
        self.tree_for(module).softdep(module)
    }

    fn resolve_softdep(&self, name: &str) -> Vec<String> {
        let module = normalize_module_name(name);
        let known = |tree: &KernelModules| tree.is_loadable(&module) || tree.is_builtin(&module);
        if known(self.image) || self.library.is_some_and(known) {
            return vec![module];
        }
        let mut found = Vec::new();
        for tree in std::iter::once(self.image).chain(self.library) {
            for m in tree.lookup(name).into_iter().filter(|m| !m.builtin) {
                if !found.contains(&m.name) {
                    found.push(m.name);
                }
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::tests::build;
    use std::fs;

    /// Writes a module tree with the given module files (name, modinfo) and
    /// index lines.
    fn tree(dir: &Path, modules: &[(&str, &str)], alias: &str, dep: &str, builtin: &str) {
        fs::create_dir_all(dir.join("kernel")).expect("mkdir");
        for (file, modinfo) in modules {
            let elf = build(
                true,
                false,
                &[(".modinfo", modinfo.replace(';', "\0").as_bytes())],
            );
            fs::write(dir.join("kernel").join(file), elf).expect("module");
        }
        fs::write(dir.join("modules.alias"), alias).expect("alias");
        fs::write(dir.join("modules.dep"), dep).expect("dep");
        fs::write(dir.join("modules.builtin"), builtin).expect("builtin");
        fs::write(
            dir.join("modules.softdep"),
            "softdep virtio_blk pre: crc_x\n",
        )
        .expect("soft");
    }

    const ALIAS: &str = "alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci\n\
                         alias virtio:d00000002v* virtio_blk\n\
                         alias virtio:d00000001v* virtio_net\n\
                         alias crc_x crc_impl\n\
                         alias pci:v00008086d000010D3sv*sd*bc*sc*i* e1000e\n";
    const DEP: &str = "kernel/virtio.ko:\n\
                       kernel/virtio_pci.ko: kernel/virtio.ko\n\
                       kernel/virtio_blk.ko: kernel/virtio.ko\n\
                       kernel/virtio_net.ko: kernel/virtio.ko\n\
                       kernel/crc_impl.ko:\n\
                       kernel/e1000e.ko:\n";
    const MODULES: [(&str, &str); 6] = [
        ("virtio.ko", "name=virtio"),
        ("virtio_pci.ko", "name=virtio_pci;depends=virtio"),
        ("virtio_blk.ko", "name=virtio_blk;depends=virtio"),
        ("virtio_net.ko", "name=virtio_net;depends=virtio"),
        ("crc_impl.ko", "name=crc_impl"),
        (
            "e1000e.ko",
            "name=e1000e;firmware=e1000e/a.bin;firmware=e1000e/b.bin",
        ),
    ];

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn virtio_pci_alone_gets_the_bus_driver() {
        let dir = tempfile::tempdir().expect("temp dir");
        let image = dir.path().join("root/lib/modules/6.1");
        tree(&image, &MODULES, ALIAS, DEP, "kernel/fs/ext4.ko\n");
        fs::create_dir_all(dir.path().join("root/lib/firmware/e1000e")).expect("fw dir");
        fs::write(dir.path().join("root/lib/firmware/e1000e/a.bin.zst"), "fw").expect("fw");
        let km = KernelModules::load(&image).expect("loads");
        let plan = Planner::new(&km)
            .plan(&names(&[
                "pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00",
                "pci:v00008086d000010D3sv00008086sd00000000bc02sc00i00",
                "pci:v00008086d000029C0sv00001AF4sd00001100bc06sc00i00",
            ]))
            .expect("plans");
        assert_eq!(plan.devices.len(), 4);
        assert_eq!(plan.devices[1].modalias, "virtio:d00000002v00001AF4");
        assert_eq!(plan.devices[1].claimed_by, ["virtio_blk"]);
        assert_eq!(
            plan.load_order(),
            ["virtio", "virtio_pci", "crc_impl", "virtio_blk", "e1000e"]
        );
        assert_eq!(
            plan.unclaimed,
            ["pci:v00008086d000029C0sv00001AF4sd00001100bc06sc00i00"]
        );
        assert!(plan.missing.is_empty());
        assert_eq!(
            plan.modules[3].source,
            ModuleSource::Image {
                path: "kernel/virtio_blk.ko".into()
            }
        );
        assert_eq!(plan.firmware.len(), 2);
        assert!(matches!(
            plan.firmware[0].source,
            FirmwareSource::Image { .. }
        ));
        assert_eq!(plan.firmware[1].source, FirmwareSource::Absent);
    }

    #[test]
    fn both_layers_given_are_not_derived_twice() {
        let dir = tempfile::tempdir().expect("temp dir");
        tree(dir.path(), &MODULES, ALIAS, DEP, "");
        let km = KernelModules::load(dir.path()).expect("loads");
        let plan = Planner::new(&km)
            .plan(&names(&[
                "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00",
                "virtio:d00000001v00001AF4",
            ]))
            .expect("plans");
        assert_eq!(plan.devices.len(), 2);
        assert!(plan.devices.iter().all(|d| d.derived_from.is_none()));
        assert_eq!(plan.load_order(), ["virtio", "virtio_pci", "virtio_net"]);
    }

    #[test]
    fn the_library_fills_gaps_and_missing_modules_are_listed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let image = dir.path().join("image");
        // The image lost virtio_blk.ko and, after a depmod, its alias line;
        // virtio_net.ko is gone but still indexed.
        let kept: Vec<_> = MODULES
            .iter()
            .filter(|(f, _)| *f != "virtio_blk.ko" && *f != "virtio_net.ko")
            .copied()
            .collect();
        let alias = ALIAS.replace("alias virtio:d00000002v* virtio_blk\n", "");
        let dep = DEP.replace("kernel/virtio_blk.ko: kernel/virtio.ko\n", "");
        tree(&image, &kept, &alias, &dep, "");
        let library = dir.path().join("library");
        tree(&library, &MODULES[..3], ALIAS, DEP, "");
        let image_km = KernelModules::load(&image).expect("image");
        let library_km = KernelModules::load(&library).expect("library");
        let modaliases = names(&[
            "pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00",
            "virtio:d00000001v00001AF4",
        ]);
        let plan = Planner::new(&image_km)
            .with_library(&library_km, dir.path().join("no-firmware"))
            .plan(&modaliases)
            .expect("plans");
        let source = |name: &str| {
            plan.modules
                .iter()
                .find(|m| m.name == name)
                .map(|m| m.source.clone())
        };
        assert_eq!(
            source("virtio_blk"),
            Some(ModuleSource::Library {
                path: library.join("kernel/virtio_blk.ko")
            })
        );
        assert_eq!(
            source("virtio"),
            Some(ModuleSource::Image {
                path: "kernel/virtio.ko".into()
            })
        );
        assert_eq!(
            plan.missing,
            [MissingModule {
                name: "virtio_net".into(),
                needed_by: vec!["virtio:d00000001v00001AF4".into()],
            }]
        );
        // Without the library, virtio_blk is claimed by nothing.
        let plan = Planner::new(&image_km).plan(&modaliases).expect("plans");
        assert_eq!(plan.unclaimed, ["virtio:d00000002v00001AF4"]);
    }

    #[test]
    fn builtins_need_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let alias = format!("{ALIAS}alias pci:v*d*sv*sd*bc01sc08i02* nvme\n");
        tree(
            dir.path(),
            &MODULES,
            &alias,
            DEP,
            "kernel/drivers/nvme/nvme.ko\n",
        );
        let km = KernelModules::load(dir.path()).expect("loads");
        let plan = Planner::new(&km)
            .plan(&names(&[
                "pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i02",
            ]))
            .expect("plans");
        assert_eq!(plan.devices[0].claimed_by, ["nvme"]);
        assert!(plan.devices[0].load.is_empty());
        assert_eq!(plan.modules.len(), 1);
        assert_eq!(plan.modules[0].source, ModuleSource::Builtin);
        assert!(plan.load_order().is_empty());
    }
}
