//! `ferry drivers add | match | ls` against the real Debian 6.1 kernel tree
//! of the rootfs fixture, and the Debian `linux-image` package of the same
//! kernel version (fetched with `apt-get download` into
//! `/var/cache/ferry/debs`, or `$FERRY_DEB_CACHE`, and kept there). Tests
//! that need the fixture need root; tests that need the package print
//! `SKIPPED` when it cannot be fetched.

use std::path::{Path, PathBuf};
use std::process::Command;

use ferry_tests::{debian_fixture, fails, ferry, is_root, json, ok};
use serde_json::Value;

/// QEMU's PCI devices as a Linux guest sees them.
const VIRTIO_BLK: &str = "pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00";
const VIRTIO_NET: &str = "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00";
const NVME: &str = "pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i02";
const E1000E: &str = "pci:v00008086d000010D3sv00008086sd00000000bc02sc00i00";
const AHCI: &str = "pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01";
const RTL8139: &str = "pci:v000010ECd00008139sv00001AF4sd00001100bc02sc00i00";
const PIIX_IDE: &str = "pci:v00008086d00007010sv00001AF4sd00001100bc01sc01i80";
/// The Q35 host bridge: no driver claims it.
const HOST_BRIDGE: &str = "pci:v00008086d000029C0sv00001AF4sd00001100bc06sc00i00";

/// The fixture's kernel tree, extracted; deleted when dropped.
struct Tree {
    dir: tempfile::TempDir,
    /// `…/usr/lib/modules/VERSION`.
    root: PathBuf,
    version: String,
}

/// Extracts the fixture's `/usr/lib/modules/VERSION`; `None`, said
/// loudly, when not root (building the fixture needs it).
fn fixture_tree(test: &str) -> Option<Tree> {
    if !is_root() {
        eprintln!("SKIPPED {test}: the Debian fixture needs root");
        return None;
    }
    let fixture = debian_fixture();
    let dir = tempfile::tempdir().expect("temp dir");
    ok(Command::new("tar")
        .args(["-I", "zstd", "-xf"])
        .arg(fixture.join("rootfs.tar.zst"))
        .arg("-C")
        .arg(dir.path())
        .args(["--wildcards", "*/lib/modules/*"]));
    let modules = ["usr/lib/modules", "lib/modules"]
        .iter()
        .map(|p| dir.path().join(p))
        .find(|p| p.is_dir())
        .expect("the fixture has a module directory");
    let root = std::fs::read_dir(&modules)
        .expect("list modules")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.join("modules.dep").is_file())
        .expect("the fixture has a kernel tree");
    let version = root
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a version")
        .to_owned();
    Some(Tree { dir, root, version })
}

/// The Debian package of kernel `version`, from the cache or fetched with
/// `apt-get download`; `None` (with a loud SKIPPED line) when impossible.
fn kernel_deb(version: &str, test: &str) -> Option<PathBuf> {
    let cache = std::env::var_os("FERRY_DEB_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/ferry/debs"));
    let package = format!("linux-image-{version}");
    let cached = || {
        std::fs::read_dir(&cache)
            .ok()?
            .filter_map(Result::ok)
            .find_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                (name.starts_with(&format!("{package}_")) && name.ends_with(".deb"))
                    .then(|| e.path())
            })
    };
    if let Some(deb) = cached() {
        return Some(deb);
    }
    if std::fs::create_dir_all(&cache).is_err() {
        eprintln!("SKIPPED {test}: cannot create {}", cache.display());
        return None;
    }
    let download = || {
        Command::new("apt-get")
            .args(["download", "-q", &package])
            .current_dir(&cache)
            .status()
            .is_ok_and(|s| s.success())
    };
    // A machine that never ran `apt-get update` has no package lists.
    if !(download() || is_root() && update_lists() && download()) {
        eprintln!("SKIPPED {test}: `apt-get download {package}` failed (no Debian mirror?)");
        return None;
    }
    cached()
}

fn update_lists() -> bool {
    Command::new("apt-get")
        .args(["update", "-qq"])
        .status()
        .is_ok_and(|s| s.success())
}

/// `ferry drivers --drivers LIB ARGS…`.
fn drivers(lib: &Path, args: &[&str]) -> Command {
    let mut cmd = ferry(&lib.join("images"));
    cmd.env_remove("FERRY_DRIVERS")
        .arg("drivers")
        .arg("--drivers")
        .arg(lib)
        .args(args);
    cmd
}

/// `ferry drivers --drivers LIB match --kernel K [--kernel-tree T] --modalias M…`.
fn match_cmd(lib: &Path, kernel: &str, tree: Option<&Path>, modaliases: &[&str]) -> Command {
    let mut cmd = drivers(lib, &["match", "--kernel", kernel]);
    if let Some(tree) = tree {
        cmd.arg("--kernel-tree").arg(tree);
    }
    for m in modaliases {
        cmd.args(["--modalias", m]);
    }
    cmd
}

/// Runs `drivers match … --json`.
fn run_match(lib: &Path, kernel: &str, tree: Option<&Path>, modaliases: &[&str]) -> Value {
    json(&mut match_cmd(lib, kernel, tree, modaliases))
}

/// The plan's modules in load order (builtins last), as names.
fn module_names(plan: &Value) -> Vec<String> {
    plan["modules"]
        .as_array()
        .expect("modules")
        .iter()
        .map(|m| m["name"].as_str().expect("name").to_owned())
        .collect()
}

/// The source of `module` in the plan: (kind, path).
fn source(plan: &Value, module: &str) -> (String, String) {
    let entry = plan["modules"]
        .as_array()
        .expect("modules")
        .iter()
        .find(|m| m["name"] == module)
        .unwrap_or_else(|| panic!("{module} is not in the plan: {plan:#}"));
    (
        entry["source"]["kind"].as_str().expect("kind").to_owned(),
        entry["source"]["path"].as_str().unwrap_or("").to_owned(),
    )
}

/// The modules claiming the device `modalias`.
fn claimed_by(plan: &Value, modalias: &str) -> Vec<String> {
    let device = plan["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .find(|d| d["modalias"] == modalias)
        .unwrap_or_else(|| panic!("no device {modalias} in {plan:#}"));
    device["claimed_by"]
        .as_array()
        .expect("claimed_by")
        .iter()
        .map(|m| m.as_str().expect("name").to_owned())
        .collect()
}

/// Asserts that each `(before, after)` pair is loaded in that order.
fn assert_order(plan: &Value, pairs: &[(&str, &str)]) {
    let order = module_names(plan);
    let at = |m: &str| order.iter().position(|x| x == m);
    for (before, after) in pairs {
        assert!(
            at(before).is_some() && at(before) < at(after),
            "{before} before {after} in {order:?}"
        );
    }
}

#[test]
fn qemu_devices_match_in_the_image_tree() {
    let Some(tree) = fixture_tree("qemu_devices_match_in_the_image_tree") else {
        return;
    };
    let no_library = tree.dir.path().join("no-library");
    let all = [
        VIRTIO_BLK,
        VIRTIO_NET,
        NVME,
        E1000E,
        AHCI,
        RTL8139,
        PIIX_IDE,
        HOST_BRIDGE,
    ];
    let plan = run_match(&no_library, &tree.version, Some(&tree.root), &all);
    assert_eq!(claimed_by(&plan, VIRTIO_BLK), ["virtio_pci"]);
    assert_eq!(
        claimed_by(&plan, "virtio:d00000002v00001AF4"),
        ["virtio_blk"]
    );
    assert_eq!(claimed_by(&plan, VIRTIO_NET), ["virtio_pci"]);
    assert_eq!(
        claimed_by(&plan, "virtio:d00000001v00001AF4"),
        ["virtio_net"]
    );
    let derived = plan["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .find(|d| d["modalias"] == "virtio:d00000002v00001AF4")
        .expect("derived virtio-blk device");
    assert_eq!(derived["derived_from"], VIRTIO_BLK);
    assert_eq!(claimed_by(&plan, NVME), ["nvme"]);
    assert_eq!(claimed_by(&plan, E1000E), ["e1000e"]);
    assert_eq!(claimed_by(&plan, AHCI), ["ahci"]);
    assert_eq!(claimed_by(&plan, RTL8139), ["8139cp", "8139too"]);
    assert_eq!(claimed_by(&plan, PIIX_IDE), ["ata_piix", "ata_generic"]);
    assert_eq!(plan["unclaimed"], serde_json::json!([HOST_BRIDGE]));
    assert_eq!(plan["missing"], serde_json::json!([]));
    assert_eq!(plan["library"], Value::Null);
    for (module, path) in [
        ("virtio_blk", "kernel/drivers/block/virtio_blk.ko"),
        ("virtio_pci", "kernel/drivers/virtio/virtio_pci.ko"),
        ("virtio_net", "kernel/drivers/net/virtio_net.ko"),
        ("nvme", "kernel/drivers/nvme/host/nvme.ko"),
        (
            "e1000e",
            "kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko",
        ),
        ("ahci", "kernel/drivers/ata/ahci.ko"),
        ("8139too", "kernel/drivers/net/ethernet/realtek/8139too.ko"),
        ("ata_piix", "kernel/drivers/ata/ata_piix.ko"),
        ("libata", "kernel/drivers/ata/libata.ko"),
    ] {
        assert_eq!(source(&plan, module), ("image".into(), path.into()));
    }
    assert_order(
        &plan,
        &[
            ("virtio", "virtio_ring"),
            ("virtio_ring", "virtio_pci"),
            ("virtio_pci_modern_dev", "virtio_pci"),
            ("virtio_pci", "virtio_blk"),
            ("failover", "net_failover"),
            ("net_failover", "virtio_net"),
            ("nvme_core", "nvme"),
            ("scsi_mod", "libata"),
            ("libata", "libahci"),
            ("libahci", "ahci"),
            ("libata", "ata_piix"),
            ("mii", "8139too"),
        ],
    );

    // The same, for people.
    let text = ok(&mut match_cmd(
        &no_library,
        &tree.version,
        Some(&tree.root),
        &[VIRTIO_BLK],
    ));
    assert!(
        text.contains("virtio:d00000002v00001AF4  virtio_blk  (virtio bus, derived from"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["virtio_blk", "image", "kernel/drivers/block/virtio_blk.ko"]),
        "{text}"
    );
}

#[test]
fn a_kernel_package_fills_the_gaps_of_an_image_tree() {
    let test = "a_kernel_package_fills_the_gaps_of_an_image_tree";
    let Some(tree) = fixture_tree(test) else {
        return;
    };
    let Some(deb) = kernel_deb(&tree.version, test) else {
        return;
    };
    let lib = tree.dir.path().join("library");
    let added = json(&mut drivers(&lib, &["add", &deb.display().to_string()]));
    let kernel = &added["kernels"][0];
    assert_eq!(kernel["version"], tree.version.as_str());
    let fixture_count = std::fs::read_to_string(tree.root.join("modules.dep"))
        .expect("modules.dep")
        .lines()
        .count();
    assert_eq!(kernel["modules"], fixture_count);
    assert!(
        kernel["indexes"] == "ferry" || kernel["indexes"] == "depmod",
        "{added:#}"
    );
    let listed = json(&mut drivers(&lib, &["ls"]));
    assert_eq!(listed[0]["version"], tree.version.as_str());
    assert_eq!(listed[0]["modules"], fixture_count);
    assert!(ok(&mut drivers(&lib, &["ls"])).contains(&tree.version));

    // Without a kernel tree, the library's tree is the kernel.
    let plan = run_match(&lib, &tree.version, None, &[VIRTIO_BLK, NVME]);
    let library_tree = lib.join(&tree.version);
    for (module, path) in [
        ("virtio_blk", "kernel/drivers/block/virtio_blk.ko"),
        ("nvme", "kernel/drivers/nvme/host/nvme.ko"),
        ("virtio", "kernel/drivers/virtio/virtio.ko"),
    ] {
        let expected = library_tree.join(path).display().to_string();
        assert_eq!(source(&plan, module), ("library".into(), expected));
    }

    // An image whose virtio_blk.ko was deleted (indexes unchanged) takes
    // it from the library, and everything else from itself.
    let copies = tree.dir.path().join("copies");
    std::fs::create_dir(&copies).expect("mkdir");
    ok(Command::new("cp").arg("-a").arg(&tree.root).arg(&copies));
    let copy = copies.join(&tree.version);
    std::fs::remove_file(copy.join("kernel/drivers/block/virtio_blk.ko")).expect("delete");
    let from_library = library_tree
        .join("kernel/drivers/block/virtio_blk.ko")
        .display()
        .to_string();
    let plan = run_match(&lib, &tree.version, Some(&copy), &[VIRTIO_BLK, VIRTIO_NET]);
    assert_eq!(
        source(&plan, "virtio_blk"),
        ("library".into(), from_library.clone())
    );
    for (module, path) in [
        ("virtio", "kernel/drivers/virtio/virtio.ko"),
        ("virtio_pci", "kernel/drivers/virtio/virtio_pci.ko"),
        ("virtio_net", "kernel/drivers/net/virtio_net.ko"),
    ] {
        assert_eq!(source(&plan, module), ("image".into(), path.into()));
    }
    assert_eq!(plan["missing"], serde_json::json!([]));
    assert_eq!(plan["library"], library_tree.display().to_string());

    // Without the library, the deploy must be refused.
    let err = fails(&mut match_cmd(
        &tree.dir.path().join("no-library"),
        &tree.version,
        Some(&copy),
        &[VIRTIO_BLK],
    ));
    assert!(
        err.contains("virtio_blk (for virtio:d00000002v00001AF4)") && err.contains("neither"),
        "{err}"
    );

    // After a depmod in the image, its alias lines are gone too: the
    // library's modules.alias of the same version still finds it.
    for index in ["modules.alias", "modules.dep"] {
        let path = copy.join(index);
        let text = std::fs::read_to_string(&path).expect("read index");
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| !l.ends_with(" virtio_blk") && !l.contains("/virtio_blk.ko:"))
            .collect();
        assert!(kept.len() < text.lines().count(), "{index} lost no line");
        std::fs::write(&path, kept.join("\n") + "\n").expect("write index");
    }
    let plan = run_match(&lib, &tree.version, Some(&copy), &[VIRTIO_BLK]);
    assert_eq!(
        claimed_by(&plan, "virtio:d00000002v00001AF4"),
        ["virtio_blk"]
    );
    assert_eq!(
        source(&plan, "virtio_blk"),
        ("library".into(), from_library)
    );
    assert_order(
        &plan,
        &[("virtio", "virtio_blk"), ("virtio_ring", "virtio_blk")],
    );

    // Unknown versions are named with the ones present.
    let err = fails(&mut match_cmd(&lib, "5.10.0-99-amd64", None, &[NVME]));
    assert!(
        err.contains(&format!(
            "kernel 5.10.0-99-amd64 is not in the driver library {}; it holds: {}",
            lib.display(),
            tree.version
        )),
        "{err}"
    );
}

#[test]
fn a_module_directory_is_added_with_its_own_indexes() {
    let Some(tree) = fixture_tree("a_module_directory_is_added_with_its_own_indexes") else {
        return;
    };
    let lib = tree.dir.path().join("library");
    let root = tree.root.display().to_string();
    for replaced in [false, true] {
        let added = json(&mut drivers(&lib, &["add", &root]));
        let kernel = &added["kernels"][0];
        assert_eq!(kernel["version"], tree.version.as_str());
        assert_eq!(kernel["indexes"], "shipped");
        assert_eq!(kernel["replaced"], replaced);
    }
    let copied = lib.join(&tree.version);
    for file in [
        "modules.alias",
        "modules.dep",
        "kernel/drivers/block/virtio_blk.ko",
    ] {
        assert_eq!(
            std::fs::read(copied.join(file)).expect("copied"),
            std::fs::read(tree.root.join(file)).expect("original"),
            "{file}"
        );
    }
    let plan = run_match(&lib, &tree.version, None, &[AHCI]);
    assert_eq!(
        source(&plan, "ahci"),
        (
            "library".into(),
            copied
                .join("kernel/drivers/ata/ahci.ko")
                .display()
                .to_string()
        )
    );
}

#[test]
fn mistakes_are_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let lib = dir.path().join("library");
    let err = fails(&mut drivers(&lib, &["ls"]));
    assert!(err.contains("no driver library at"), "{err}");
    let err = fails(&mut match_cmd(&lib, "6.1.0-1-amd64", None, &[NVME]));
    assert!(err.contains("no driver library at"), "{err}");

    let not_a_deb = dir.path().join("linux-image.deb");
    std::fs::write(&not_a_deb, "PK\u{3}\u{4} a zip file").expect("write");
    let err = fails(&mut drivers(
        &lib,
        &["add", &not_a_deb.display().to_string()],
    ));
    assert!(
        err.contains("linux-image.deb") && err.contains("not a Debian package"),
        "{err}"
    );
    let err = fails(&mut drivers(&lib, &["add", "/nonexistent/linux.deb"]));
    assert!(err.contains("/nonexistent/linux.deb"), "{err}");

    // A kernel tree named after another version is refused before use.
    let other = dir.path().join("5.10.0-9-amd64");
    std::fs::create_dir(&other).expect("mkdir");
    let err = fails(&mut match_cmd(&lib, "6.1.0-1-amd64", Some(&other), &[NVME]));
    assert!(err.contains("is not for kernel 6.1.0-1-amd64"), "{err}");
    let empty = dir.path().join("6.1.0-1-amd64");
    std::fs::create_dir(&empty).expect("mkdir");
    let err = fails(&mut match_cmd(&lib, "6.1.0-1-amd64", Some(&empty), &[NVME]));
    assert!(err.contains("modules.alias"), "{err}");
}
