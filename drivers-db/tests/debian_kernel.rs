//! Matching against the real Debian kernel tree of ferry's rootfs fixture.
//!
//! The fixture's rootfs tarball (`FERRY_ROOTFS_TARBALL`, else the one
//! `tests/fixtures/debian-disk.sh` builds or finds in its cache) holds the
//! kernel's `modules.*` indexes, extracted into a temporary directory with
//! `tar -I zstd`. Where the fixture cannot be built every test prints
//! `SKIPPED` and returns.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use drivers_db::{KernelModules, ModuleMatch};

/// The extracted tree: kept alive for the whole test binary.
struct Extracted {
    _dir: tempfile::TempDir,
    modules: KernelModules,
}

/// Extracts and loads the fixture's kernel tree once, or `None` when the
/// tarball is absent.
fn kernel() -> Option<&'static KernelModules> {
    static TREE: OnceLock<Option<Extracted>> = OnceLock::new();
    let tree = TREE.get_or_init(|| {
        let tarball = std::env::var_os("FERRY_ROOTFS_TARBALL")
            .map(PathBuf::from)
            .or_else(fixture_tarball)?;
        let dir = tempfile::tempdir().expect("temp dir");
        // `*` crosses `/` in tar's wildcards, so this finds both
        // ./lib/modules and the merged-/usr ./usr/lib/modules.
        let status = Command::new("tar")
            .args(["-I", "zstd", "-xf"])
            .arg(&tarball)
            .arg("-C")
            .arg(dir.path())
            .args(["--wildcards", "*/modules/*/modules.*"])
            .status()
            .expect("run tar");
        assert!(
            status.success(),
            "extracting {} failed: {status}",
            tarball.display()
        );
        let root = find_tree(dir.path()).expect("the fixture holds a modules.alias");
        let modules = KernelModules::load(&root).expect("load the fixture's module tree");
        Some(Extracted { _dir: dir, modules })
    });
    match tree {
        Some(tree) => Some(&tree.modules),
        None => {
            eprintln!(
                "SKIPPED: the Debian fixture could not be built here (needs root and the \
                 mirror; or set FERRY_ROOTFS_TARBALL)"
            );
            None
        }
    }
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
    let Some(km) = kernel() else { return };
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
    let Some(km) = kernel() else { return };
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
    let Some(km) = kernel() else { return };
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
    let Some(km) = kernel() else { return };
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
    let Some(km) = kernel() else { return };
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
