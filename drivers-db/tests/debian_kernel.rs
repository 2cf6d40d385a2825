//! Matching against the real Debian kernel tree of ferry's rootfs fixture,
//! and reading its real module files.
//!
//! The fixture's rootfs tarball (`FERRY_ROOTFS_TARBALL`, else the one
//! `tests/fixtures/debian-disk.sh` builds or finds in its cache) holds the
//! kernel's `modules.*` indexes (made by Debian's depmod) and module files,
//! extracted with `tar -I zstd` into a temporary directory per test (a
//! static would never be dropped, leaving the tree behind). Where the
//! fixture cannot be built every test prints `SKIPPED` and returns.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use drivers_db::{KernelModules, Modinfo, ModuleMatch};

/// An extracted tree, deleted when dropped.
struct Extracted {
    _dir: tempfile::TempDir,
    root: PathBuf,
    modules: KernelModules,
}

/// Extracts the entries of the fixture's kernel tree matching `wildcard`
/// into a temporary directory and loads it, or `None` when the tarball is
/// absent.
fn extract(wildcard: &str) -> Option<Extracted> {
    static TARBALL: OnceLock<Option<PathBuf>> = OnceLock::new();
    let tarball = TARBALL.get_or_init(|| {
        std::env::var_os("FERRY_ROOTFS_TARBALL")
            .map(PathBuf::from)
            .or_else(fixture_tarball)
    });
    let Some(tarball) = tarball else {
        eprintln!(
            "SKIPPED: the Debian fixture could not be built here (needs root and the \
             mirror; or set FERRY_ROOTFS_TARBALL)"
        );
        return None;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    // `*` crosses `/` in tar's wildcards, so this finds both
    // ./lib/modules and the merged-/usr ./usr/lib/modules.
    let status = Command::new("tar")
        .args(["-I", "zstd", "-xf"])
        .arg(tarball)
        .arg("-C")
        .arg(dir.path())
        .args(["--wildcards", wildcard])
        .status()
        .expect("run tar");
    assert!(
        status.success(),
        "extracting {} failed: {status}",
        tarball.display()
    );
    let root = find_tree(dir.path()).expect("the fixture holds a modules.alias");
    let modules = KernelModules::load(&root).expect("load the fixture's module tree");
    Some(Extracted {
        _dir: dir,
        root,
        modules,
    })
}

/// The fixture's kernel indexes (no module files).
fn kernel() -> Option<Extracted> {
    extract("*/modules/*/modules.*")
}

/// The fixture's whole kernel tree, module files included.
fn full_tree() -> Option<Extracted> {
    extract("*/modules/*")
}

/// The rootfs tarball of the Debian fixture, built (or reused from its
/// cache) by `tests/fixtures/debian-disk.sh`, which needs root and the
/// Debian mirror; `None` when the script cannot run here.
fn fixture_tarball() -> Option<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/debian-disk.sh");
    let out = Command::new(&script)
        .stderr(std::process::Stdio::inherit())
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let dir = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .map(|l| PathBuf::from(l.trim()))?;
    let tarball = dir.join("rootfs.tar.zst");
    tarball.exists().then_some(tarball)
}

/// The directory under `dir` that contains `modules.alias`.
fn find_tree(dir: &Path) -> Option<PathBuf> {
    if dir.join("modules.alias").is_file() {
        return Some(dir.to_path_buf());
    }
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
        .find_map(|entry| find_tree(&entry.path()))
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn virtio_devices() {
    let Some(tree) = kernel() else { return };
    let km = &tree.modules;
    assert_eq!(
        km.match_modalias("pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00"),
        ["virtio_pci"]
    );
    assert_eq!(
        km.match_modalias("virtio:d00000002v00001AF4"),
        ["virtio_blk"]
    );
    assert_eq!(
        km.match_modalias("virtio:d00000001v00001AF4"),
        ["virtio_net"]
    );
    assert_eq!(
        km.match_modalias("virtio:d00000008v00001AF4"),
        ["virtio_scsi"]
    );
    for module in [
        "virtio_pci",
        "virtio_blk",
        "virtio_net",
        "virtio",
        "virtio_ring",
    ] {
        assert!(
            !km.is_builtin(module),
            "{module} is a loadable module in Debian 6.1"
        );
    }
}

#[test]
fn pci_storage_and_network() {
    let Some(tree) = kernel() else { return };
    let km = &tree.modules;
    assert_eq!(
        km.match_modalias("pci:v00008086d0000100Esv00008086sd0000001Ebc02sc00i00"),
        ["e1000"]
    );
    assert_eq!(
        km.match_modalias("pci:v0000144Dd0000A808sv0000144Dsd0000A801bc01sc08i02"),
        ["nvme"]
    );
    // QEMU's ICH9 AHCI controller: claimed by device id and by class.
    assert_eq!(
        km.match_modalias("pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01"),
        ["ahci"]
    );
    // Any vendor's AHCI controller, by class alone.
    assert_eq!(
        km.match_modalias("pci:v00001234d00005678sv00001234sd00005678bc01sc06i01"),
        ["ahci"]
    );
    for module in ["e1000", "nvme", "ahci"] {
        assert!(
            !km.is_builtin(module),
            "{module} is a loadable module in Debian 6.1"
        );
        assert!(km.module_path(module).is_some(), "{module} has a path");
    }
    assert_eq!(
        km.module_path("e1000"),
        Some(Path::new(
            "kernel/drivers/net/ethernet/intel/e1000/e1000.ko"
        ))
    );
}

#[test]
fn other_buses() {
    let Some(tree) = kernel() else { return };
    let km = &tree.modules;
    assert_eq!(km.match_modalias("acpi:QEMU0002:"), ["qemu_fw_cfg"]);
    assert_eq!(km.match_modalias("scsi:t-0x00"), ["sd_mod"]);
    assert_eq!(km.match_modalias("xen:vbd"), ["xen_blkfront"]);
    assert_eq!(
        km.match_modalias("vmbus:1df6c444444400449d52802e27ede19f"),
        ["pci_hyperv"]
    );
    assert_eq!(km.match_modalias("platform:gpio_exar"), ["gpio_exar"]);
    // Built in to Debian's kernel: found through modules.builtin.modinfo.
    assert_eq!(
        km.lookup("platform:rtc_cmos"),
        [ModuleMatch {
            name: "rtc_cmos".into(),
            builtin: true
        }]
    );
    assert!(km.is_builtin("rtc-cmos"));
    assert!(km.closure(&names(&["rtc_cmos"])).is_empty());
}

#[test]
fn closures_follow_modules_dep() {
    let Some(tree) = kernel() else { return };
    let km = &tree.modules;
    // modules.dep: virtio_blk.ko: virtio_ring.ko virtio.ko
    assert_eq!(
        km.closure(&names(&["virtio_blk"])),
        ["virtio", "virtio_ring", "virtio_blk"]
    );
    // modules.dep: virtio_pci.ko: virtio_pci_legacy_dev.ko
    //   virtio_pci_modern_dev.ko virtio_ring.ko virtio.ko
    assert_eq!(
        km.closure(&names(&["virtio_pci", "virtio_blk"])),
        [
            "virtio",
            "virtio_ring",
            "virtio_pci_modern_dev",
            "virtio_pci_legacy_dev",
            "virtio_pci",
            "virtio_blk"
        ]
    );
    // ahci.ko: libahci.ko libata.ko scsi_mod.ko scsi_common.ko
    assert_eq!(
        km.closure(&names(&["ahci"])),
        ["scsi_common", "scsi_mod", "libata", "libahci", "ahci"]
    );
}

#[test]
fn closures_are_ordered_and_complete() {
    let Some(tree) = kernel() else { return };
    let km = &tree.modules;
    let wanted = names(&["nvme", "virtio_net", "ext4", "ahci", "virtio_scsi"]);
    let order = km.closure(&wanted);
    let position = |m: &str| order.iter().position(|x| x == m);
    for module in &wanted {
        assert!(position(module).is_some(), "{module} in {order:?}");
    }
    let mut unique = order.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), order.len(), "no duplicates in {order:?}");
    // nvme.ko: nvme-core.ko t10-pi.ko crc64-rocksoft.ko crc-t10dif.ko crc64.ko ...
    for (before, after) in [
        ("nvme_core", "nvme"),
        ("t10_pi", "nvme"),
        ("crc64", "crc64_rocksoft"),
        ("net_failover", "virtio_net"),
        ("failover", "net_failover"),
        ("jbd2", "ext4"),
        ("mbcache", "ext4"),
        ("scsi_mod", "virtio_scsi"),
        // softdep ext4 pre: crypto-crc32c, an alias of both implementations.
        ("crc32c_intel", "ext4"),
        ("crc32c_generic", "ext4"),
    ] {
        let (b, a) = (position(before), position(after));
        assert!(b.is_some() && b < a, "{before} before {after} in {order:?}");
    }
}

/// Compresses `src` with a command-line tool into `dst`.
fn compress(tool: &str, src: &Path, dst: &Path) {
    let out = Command::new(tool)
        .args(["-c", "-q"])
        .arg(src)
        .output()
        .unwrap_or_else(|e| panic!("running {tool}: {e}"));
    assert!(out.status.success(), "{tool} failed");
    std::fs::write(dst, out.stdout).expect("write compressed module");
}

#[test]
fn modinfo_of_real_modules_in_every_compression() {
    let Some(tree) = full_tree() else { return };
    let ko = tree.root.join("kernel/drivers/block/virtio_blk.ko");
    let plain = Modinfo::read(&ko).expect("read virtio_blk.ko");
    assert_eq!(plain.name, "virtio_blk");
    assert_eq!(plain.depends, ["virtio", "virtio_ring"]);
    assert_eq!(plain.alias, ["virtio:d00000002v*"]);
    assert_eq!(plain.license.as_deref(), Some("GPL"));
    assert_eq!(plain.description.as_deref(), Some("Virtio block driver"));
    let version = tree.root.file_name().expect("named by version");
    let vermagic = plain.vermagic.as_deref().expect("vermagic");
    assert!(
        vermagic.starts_with(&format!("{} SMP", version.to_string_lossy())),
        "{vermagic}"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    // The suffixes lie on purpose: the magic number decides.
    for (tool, name) in [
        ("xz", "virtio_blk.ko.xz"),
        ("zstd", "virtio_blk.ko.zst"),
        ("gzip", "virtio_blk.ko.gz"),
        ("xz", "virtio_blk.ko"),
    ] {
        let dst = dir.path().join(name);
        compress(tool, &ko, &dst);
        assert_eq!(Modinfo::read(&dst).expect(name), plain, "{tool} as {name}");
    }
    // Firmware, from a module that names some.
    let r8169 = Modinfo::read(
        &tree
            .root
            .join("kernel/drivers/net/ethernet/realtek/r8169.ko"),
    )
    .expect("read r8169.ko");
    assert!(
        r8169.firmware.iter().any(|f| f == "rtl_nic/rtl8168d-1.fw"),
        "{:?}",
        r8169.firmware
    );
    let ext4 = Modinfo::read(&tree.root.join("kernel/fs/ext4/ext4.ko")).expect("read ext4.ko");
    assert_eq!(ext4.softdep, ["pre: crypto-crc32c"]);
}

#[test]
fn truncated_real_modules_fail_with_the_file_named() {
    let Some(tree) = full_tree() else { return };
    let ko = tree.root.join("kernel/drivers/block/virtio_blk.ko");
    let bytes = std::fs::read(&ko).expect("read");
    let dir = tempfile::tempdir().expect("temp dir");
    let xz = dir.path().join("virtio_blk.ko.xz");
    compress("xz", &ko, &xz);
    let compressed = std::fs::read(&xz).expect("read xz");
    // Debian signs its modules: the signature after the ELF data may be
    // cut without harm, so the plain file is cut within the ELF only.
    for (data, name, last) in [
        (&bytes, "cut.ko", bytes.len() / 2),
        (&compressed, "cut.ko.xz", compressed.len() - 1),
    ] {
        for keep in [0, 3, 64, data.len() / 3, last] {
            let path = dir.path().join(name);
            std::fs::write(&path, &data[..keep]).expect("write");
            match Modinfo::read(&path) {
                Err(err) => assert!(
                    err.to_string().contains(&path.display().to_string()),
                    "{err}"
                ),
                // The section table sits after the sections, and xz checks
                // its index: none of these cuts can parse.
                Ok(info) => panic!("{name} cut at {keep} parsed: {info:?}"),
            }
        }
    }
}

#[test]
fn ferry_indexes_match_depmods() {
    let Some(tree) = full_tree() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let copy = dir.path().join("tree");
    std::fs::create_dir(&copy).expect("mkdir");
    // Module files and the files a Debian package ships, nothing depmod made.
    let status = Command::new("cp")
        .arg("-a")
        .arg(tree.root.join("kernel"))
        .arg(tree.root.join("modules.order"))
        .arg(tree.root.join("modules.builtin"))
        .arg(tree.root.join("modules.builtin.modinfo"))
        .arg(&copy)
        .status()
        .expect("cp");
    assert!(status.success());
    let count = drivers_db::depmod::generate_indexes(&copy).expect("generate");
    let depmods = &tree.modules;
    let ours = KernelModules::load(&copy).expect("load ours");
    assert_eq!(count, depmods.loadable_modules().len());
    assert_eq!(ours.loadable_modules(), depmods.loadable_modules());
    let lines = |path: &Path| -> Vec<String> {
        let mut lines: Vec<String> = std::fs::read_to_string(path)
            .expect("read index")
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_owned)
            .collect();
        lines.sort();
        lines
    };
    for index in ["modules.alias", "modules.softdep"] {
        assert_eq!(
            lines(&copy.join(index)),
            lines(&tree.root.join(index)),
            "{index}"
        );
    }
    for module in depmods.loadable_modules() {
        assert_eq!(ours.module_path(module), depmods.module_path(module));
        let mut a = ours.dependencies(module).expect("ours").to_vec();
        let mut b = depmods.dependencies(module).expect("depmod's").to_vec();
        a.sort();
        b.sort();
        assert_eq!(a, b, "dependencies of {module}");
        // Whatever the tie-breaks, a module's users come before it.
        let deps = ours.dependencies(module).expect("ours");
        for (i, dep) in deps.iter().enumerate() {
            let needs = ours.dependencies(dep).expect("dep is loadable");
            for earlier in &deps[..i] {
                assert!(
                    !needs.contains(earlier),
                    "{module}: {dep} needs {earlier}, listed before it"
                );
            }
        }
    }
    for wanted in [&["virtio_blk", "virtio_pci"][..], &["nvme", "ext4", "ahci"]] {
        let wanted = names(wanted);
        assert_eq!(
            ours.closure(&wanted),
            depmods.closure(&wanted),
            "{wanted:?}"
        );
    }
}
