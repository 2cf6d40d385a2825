//! One kernel's module tree, loaded: modalias matching and load closures.
//!
//! [`KernelModules::load`] reads the text indexes of `/lib/modules/VERSION`
//! (`modules.alias` and `modules.dep` are required; `modules.builtin`,
//! `modules.softdep` and `modules.builtin.modinfo` are optional, as on older
//! kernels) and nothing else: module files are not opened.
//!
//! [`KernelModules::match_modalias`] answers what `modprobe <modalias>` would
//! consider: every module with a matching alias pattern, in `modules.alias`
//! order, followed by built-in modules whose aliases match (those need no
//! loading; [`KernelModules::lookup`] says which is which).
//! [`KernelModules::closure`] orders modules for loading as modprobe does:
//! hard dependencies from `modules.dep` first, softdep `pre:` modules before
//! and `post:` modules after their module, no duplicates, cycles broken.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::error::ModulesError;
use crate::fnmatch::Pattern;
use crate::modalias::{self, SoftDep};

/// A module that claims a modalias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleMatch {
    /// The normalised module name.
    pub name: String,
    /// True when the module is compiled into the kernel: present once the
    /// kernel boots, nothing to load or copy.
    pub builtin: bool,
}

/// A loadable module from `modules.dep`.
#[derive(Debug, Clone)]
struct Loadable {
    /// Path relative to the tree, e.g. `kernel/drivers/block/virtio_blk.ko`.
    path: PathBuf,
    /// Hard dependencies, as `depmod` listed them.
    deps: Vec<String>,
}

/// A kernel module tree (`/lib/modules/VERSION`), loaded from its indexes.
#[derive(Debug, Clone)]
pub struct KernelModules {
    root: PathBuf,
    aliases: Vec<(Pattern, String)>,
    builtin_aliases: Vec<(Pattern, String)>,
    loadable: HashMap<String, Loadable>,
    builtin: BTreeSet<String>,
    softdeps: HashMap<String, SoftDep>,
}

/// Reads a file as UTF-8 text, naming it on failure.
fn read_text(path: &Path) -> Result<String, ModulesError> {
    std::fs::read_to_string(path).map_err(|source| ModulesError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads an optional file: `Ok(None)` when it does not exist.
fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, ModulesError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ModulesError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Turns an optional file's bytes into text, naming it when not UTF-8.
fn optional_text(path: &Path) -> Result<String, ModulesError> {
    match read_optional(path)? {
        None => Ok(String::new()),
        Some(bytes) => String::from_utf8(bytes).map_err(|err| ModulesError::Read {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, err),
        }),
    }
}

impl KernelModules {
    /// Loads the module indexes of the tree at `dir` (`/lib/modules/VERSION`).
    pub fn load(dir: &Path) -> Result<Self, ModulesError> {
        let alias_path = dir.join("modules.alias");
        let dep_path = dir.join("modules.dep");
        let builtin_path = dir.join("modules.builtin");
        let softdep_path = dir.join("modules.softdep");
        let modinfo_path = dir.join("modules.builtin.modinfo");

        let aliases = modalias::parse_alias(&alias_path, &read_text(&alias_path)?)?
            .into_iter()
            .map(|line| (Pattern::new(&line.pattern), line.module))
            .collect();
        let loadable = modalias::parse_dep(&dep_path, &read_text(&dep_path)?)?
            .into_iter()
            .map(|line| {
                let module = Loadable {
                    path: PathBuf::from(line.path),
                    deps: line.deps,
                };
                (line.module, module)
            })
            .collect();
        let builtin = modalias::parse_builtin(&builtin_path, &optional_text(&builtin_path)?)?
            .into_iter()
            .collect();
        let softdeps = modalias::parse_softdep(&softdep_path, &optional_text(&softdep_path)?)?
            .into_iter()
            .map(|softdep| (softdep.module.clone(), softdep))
            .collect();
        let builtin_aliases = match read_optional(&modinfo_path)? {
            None => Vec::new(),
            Some(bytes) => modalias::parse_builtin_modinfo(&modinfo_path, &bytes)?
                .into_iter()
                .map(|alias| (Pattern::new(&alias.pattern), alias.module))
                .collect(),
        };
        Ok(KernelModules {
            root: dir.to_path_buf(),
            aliases,
            builtin_aliases,
            loadable,
            builtin,
            softdeps,
        })
    }

    /// The tree this was loaded from.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every module claiming `modalias`, each once: loadable modules in
    /// `modules.alias` order, then built-in ones.
    pub fn lookup(&self, modalias: &str) -> Vec<ModuleMatch> {
        let modalias = modalias::normalize_alias(modalias);
        let mut seen = HashSet::new();
        let mut found = Vec::new();
        for (table, builtin) in [(&self.aliases, false), (&self.builtin_aliases, true)] {
            for (pattern, module) in table {
                if pattern.matches(&modalias) && seen.insert(module.as_str()) {
                    found.push(ModuleMatch {
                        name: module.clone(),
                        builtin: builtin || self.builtin.contains(module),
                    });
                }
            }
        }
        found
    }

    /// Names of the modules claiming `modalias` (see [`Self::lookup`], which
    /// also says which of them are built in).
    pub fn match_modalias(&self, modalias: &str) -> Vec<String> {
        self.lookup(modalias).into_iter().map(|m| m.name).collect()
    }

    /// Whether `module` is compiled into the kernel.
    pub fn is_builtin(&self, module: &str) -> bool {
        self.builtin
            .contains(&modalias::normalize_module_name(module))
    }

    /// The module file relative to the tree (e.g.
    /// `kernel/drivers/block/virtio_blk.ko.xz`), or `None` for built-in and
    /// unknown modules.
    pub fn module_path(&self, module: &str) -> Option<&Path> {
        self.loadable
            .get(&modalias::normalize_module_name(module))
            .map(|m| m.path.as_path())
    }

    /// The module file in this tree (`root` joined with its
    /// `modules.dep` path), or `None` for built-in and unknown modules and
    /// when the file is absent (deleted after `depmod` ran).
    pub fn module_file(&self, module: &str) -> Option<PathBuf> {
        let path = self.root.join(self.module_path(module)?);
        path.is_file().then_some(path)
    }

    /// The hard dependencies `modules.dep` lists for a loadable module
    /// (transitive, most basic last), or `None` for built-in and unknown
    /// modules.
    pub fn dependencies(&self, module: &str) -> Option<&[String]> {
        self.loadable
            .get(&modalias::normalize_module_name(module))
            .map(|m| m.deps.as_slice())
    }

    /// The soft dependencies `modules.softdep` lists for `module`.
    pub fn softdep(&self, module: &str) -> Option<&SoftDep> {
        self.softdeps.get(&modalias::normalize_module_name(module))
    }

    /// Whether `modules.dep` lists `module` (loadable in this tree, though
    /// its file may have been deleted since).
    pub fn is_loadable(&self, module: &str) -> bool {
        self.loadable
            .contains_key(&modalias::normalize_module_name(module))
    }

    /// The names of all loadable modules, sorted.
    pub fn loadable_modules(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.loadable.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// The loadable modules needed for `modules`, in load order: each
    /// module's hard dependencies and softdep `pre:` modules before it, its
    /// `post:` modules after it, no duplicates. Built-in modules are left out
    /// (nothing to load), as are names that are neither modules nor aliases
    /// of modules in this tree; check with [`Self::module_path`]. Softdep
    /// names that are not module names are resolved as aliases (e.g.
    /// `crypto-crc32c`). Dependency cycles are broken where they close.
    pub fn closure(&self, modules: &[String]) -> Vec<String> {
        load_order(self, modules).order
    }
}

/// What a module is, for the load-order walk.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Node<'a> {
    /// Loadable, with its hard dependencies (most basic last).
    Loadable(&'a [String]),
    /// Compiled into the kernel: nothing to load.
    Builtin,
    /// Known nowhere.
    Unknown,
}

/// The module knowledge the load-order walk needs: one tree
/// ([`KernelModules`]) or an image's tree backed by a driver library.
pub(crate) trait ModuleGraph {
    /// What `module` (a normalised name) is.
    fn node(&self, module: &str) -> Node<'_>;
    /// Its soft dependencies.
    fn soft(&self, module: &str) -> Option<&SoftDep>;
    /// The modules a softdep entry names (a module name or an alias).
    fn resolve_softdep(&self, name: &str) -> Vec<String>;
}

impl ModuleGraph for KernelModules {
    fn node(&self, module: &str) -> Node<'_> {
        match self.loadable.get(module) {
            Some(loadable) => Node::Loadable(&loadable.deps),
            None if self.builtin.contains(module) => Node::Builtin,
            None => Node::Unknown,
        }
    }

    fn soft(&self, module: &str) -> Option<&SoftDep> {
        self.softdeps.get(module)
    }

    fn resolve_softdep(&self, name: &str) -> Vec<String> {
        let module = modalias::normalize_module_name(name);
        if self.loadable.contains_key(&module) || self.builtin.contains(&module) {
            return vec![module];
        }
        self.lookup(name)
            .into_iter()
            .filter(|m| !m.builtin)
            .map(|m| m.name)
            .collect()
    }
}

/// The result of a load-order walk.
#[derive(Debug, Default)]
pub(crate) struct LoadOrder {
    /// Loadable modules, dependencies first.
    pub order: Vec<String>,
    /// Names reached (asked for, or hard dependencies) that are known
    /// nowhere, in the order met.
    pub unknown: Vec<String>,
}

/// Orders `modules` and everything they need for loading (see
/// [`KernelModules::closure`]).
pub(crate) fn load_order(graph: &impl ModuleGraph, modules: &[String]) -> LoadOrder {
    let mut walk = Walk {
        graph,
        seen: HashSet::new(),
        result: LoadOrder::default(),
    };
    for module in modules {
        walk.visit(&modalias::normalize_module_name(module));
    }
    walk.result
}

/// The depth-first walk behind [`load_order`].
struct Walk<'a, G> {
    graph: &'a G,
    /// Modules whose visit has started (finished or still on the stack).
    seen: HashSet<String>,
    result: LoadOrder,
}

impl<G: ModuleGraph> Walk<'_, G> {
    /// Emits `module` after its dependencies. A module met again while still
    /// in progress closes a cycle and is skipped there.
    fn visit(&mut self, module: &str) {
        if !self.seen.insert(module.to_owned()) {
            return;
        }
        let deps = match self.graph.node(module) {
            Node::Loadable(deps) => deps,
            Node::Builtin => return,
            Node::Unknown => {
                self.result.unknown.push(module.to_owned());
                return;
            }
        };
        let softdep = self.graph.soft(module);
        for pre in softdep.map(|s| s.pre.as_slice()).unwrap_or_default() {
            for resolved in self.graph.resolve_softdep(pre) {
                self.visit(&resolved);
            }
        }
        // depmod lists the most basic dependencies last; kmod loads them first.
        for dep in deps.iter().rev() {
            self.visit(dep);
        }
        self.result.order.push(module.to_owned());
        for post in softdep.map(|s| s.post.as_slice()).unwrap_or_default() {
            for resolved in self.graph.resolve_softdep(post) {
                self.visit(&resolved);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a small module tree covering every bus the matcher must handle.
    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        let files: [(&str, &[u8]); 5] = [
            (
                "modules.alias",
                b"# Aliases extracted from modules themselves.\n\
                  alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci\n\
                  alias virtio:d00000002v* virtio_blk\n\
                  alias acpi*:QEMU0002:* qemu_fw_cfg\n\
                  alias platform:gpio-exar gpio_exar\n\
                  alias scsi:t-0x00* sd_mod\n\
                  alias vmbus:32412632860e1e4e9bfa0d4ecea8d14b hv_storvsc\n\
                  alias xen:vbd xen_blkfront\n\
                  alias crypto-crc32c crc32c_generic\n\
                  alias pci:v*d*sv*sd*bc01sc08i02* nvme\n",
            ),
            (
                "modules.dep",
                b"kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko\n\
                  kernel/drivers/virtio/virtio_ring.ko: kernel/drivers/virtio/virtio.ko\n\
                  kernel/drivers/virtio/virtio.ko:\n\
                  kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko\n\
                  kernel/drivers/firmware/qemu_fw_cfg.ko:\n\
                  kernel/drivers/gpio/gpio-exar.ko:\n\
                  kernel/drivers/scsi/sd_mod.ko: kernel/drivers/scsi/scsi_mod.ko\n\
                  kernel/drivers/scsi/scsi_mod.ko:\n\
                  kernel/drivers/scsi/hv_storvsc.ko:\n\
                  kernel/drivers/block/xen-blkfront.ko:\n\
                  kernel/crypto/crc32c_generic.ko:\n\
                  kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko\n\
                  kernel/fs/jbd2/jbd2.ko:\n\
                  kernel/test/ping.ko: kernel/test/pong.ko\n\
                  kernel/test/pong.ko: kernel/test/ping.ko\n",
            ),
            ("modules.builtin", b"kernel/drivers/nvme/host/nvme.ko\nkernel/drivers/char/rtc_cmos.ko\n"),
            (
                "modules.softdep",
                b"softdep ext4 pre: crypto-crc32c\nsoftdep sd_mod post: virtio\n",
            ),
            ("modules.builtin.modinfo", b"rtc_cmos.alias=platform:rtc_cmos\0rtc_cmos.license=GPL\0"),
        ];
        for (name, contents) in files {
            std::fs::write(dir.path().join(name), contents).expect("write fixture");
        }
        dir
    }

    /// Loads the fixture tree; the directory must outlive the tests' use.
    fn loaded() -> (tempfile::TempDir, KernelModules) {
        let dir = tree();
        let km = KernelModules::load(dir.path()).expect("load fixture tree");
        (dir, km)
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn buses_match() {
        let (_dir, km) = loaded();
        let cases = [
            (
                "pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00",
                "virtio_pci",
            ),
            ("virtio:d00000002v00001AF4", "virtio_blk"),
            ("acpi:QEMU0002:", "qemu_fw_cfg"),
            ("platform:gpio-exar", "gpio_exar"),
            ("platform:gpio_exar", "gpio_exar"),
            ("scsi:t-0x00", "sd_mod"),
            ("vmbus:32412632860e1e4e9bfa0d4ecea8d14b", "hv_storvsc"),
            ("xen:vbd", "xen_blkfront"),
        ];
        for (modalias, module) in cases {
            assert_eq!(km.match_modalias(modalias), [module], "{modalias}");
        }
        assert!(km.match_modalias("virtio:d00000009v00001AF4").is_empty());
    }

    #[test]
    fn builtins_are_reported_as_such() {
        let (_dir, km) = loaded();
        let nvme = km.lookup("pci:v0000144Dd0000A808sv0000144Dsd0000A801bc01sc08i02");
        assert_eq!(
            nvme,
            [ModuleMatch {
                name: "nvme".into(),
                builtin: true
            }]
        );
        let rtc = km.lookup("platform:rtc_cmos");
        assert_eq!(
            rtc,
            [ModuleMatch {
                name: "rtc_cmos".into(),
                builtin: true
            }]
        );
        assert!(km.is_builtin("rtc-cmos"));
        assert_eq!(km.module_path("nvme"), None);
        assert!(km.closure(&names(&["nvme"])).is_empty());
    }

    #[test]
    fn closure_orders_dependencies_first() {
        let (_dir, km) = loaded();
        assert_eq!(
            km.closure(&names(&["virtio_blk", "virtio_pci"])),
            ["virtio", "virtio_ring", "virtio_blk", "virtio_pci"]
        );
        assert_eq!(
            km.module_path("xen-blkfront"),
            Some(Path::new("kernel/drivers/block/xen-blkfront.ko"))
        );
    }

    #[test]
    fn closure_follows_softdeps() {
        let (_dir, km) = loaded();
        assert_eq!(
            km.closure(&names(&["ext4"])),
            ["crc32c_generic", "jbd2", "ext4"]
        );
        assert_eq!(
            km.closure(&names(&["sd_mod"])),
            ["scsi_mod", "sd_mod", "virtio"]
        );
    }

    #[test]
    fn closure_tolerates_cycles_and_unknowns() {
        let (_dir, km) = loaded();
        assert_eq!(
            km.closure(&names(&["ping", "no_such_module"])),
            ["pong", "ping"]
        );
    }

    #[test]
    fn missing_required_file_is_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        let err = KernelModules::load(dir.path()).expect_err("empty dir");
        assert!(err.to_string().contains("modules.alias"), "{err}");
    }
}
