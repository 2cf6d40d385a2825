//! Issue 8: whole-server migrations, end to end, under QEMU (TCG).
//!
//! The source server is the Debian bookworm fixture on IDE hardware
//! (`tests/fixtures/debian-ide.sh`: i440FX, PIIX IDE, e1000, BIOS, MBR, an
//! initramfs holding only the IDE drivers). Everything goes through
//! `ferry serve` and the agent, as a sysadmin would run it (the lab:
//! `ferry_tests::lab`):
//!
//! 1. the source boots the agent ISO; `ferry capture --agent ... --poweroff`
//!    captures its disk **offline** into the manager's library over HTTPS
//!    and powers it off (once per test run, shared by the tests below);
//! 2. each target boots with different hardware, its blank disk first and
//!    the network second, so it falls through to the agent by **PXE**;
//!    `ferry deploy --agent ... --adapt --reboot` deploys, adapts and
//!    reboots it into the migrated OS;
//! 3. the migrated server must reach `login:`, and the first-boot check
//!    that adapt installed must report through the agent's mailbox that
//!    the system is up.
//!
//! The targets: UEFI with NVMe on a bigger disk (root grown, MBR → GPT,
//! virtio-net), and BIOS with virtio on a smaller disk (the root is
//! repopulated file by file into a fresh ext4 with the same UUID). Each
//! boot is logged under `$FERRY_TEST_WORK` (default `/var/tmp/ferry-e2e`).
//!
//! They run only with `FERRY_E2E=1` (for now: see README).

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use ferry_tests::lab::{self, blank_disk, deploy_sum, DiskBus, Hardware, Lab, Migration};
use ferry_tests::{debian_ide_fixture, ok};

const GIB: u64 = 1 << 30;

/// One VM at a time: the machine has two cores.
static VMS: Mutex<()> = Mutex::new(());

fn work() -> PathBuf {
    PathBuf::from(std::env::var("FERRY_TEST_WORK").unwrap_or_else(|_| "/var/tmp/ferry-e2e".into()))
}

/// The lab, started once per test run; `None` (with the reason printed)
/// when this machine cannot run it.
fn lab() -> Option<&'static Lab> {
    static LAB: OnceLock<Option<Lab>> = OnceLock::new();
    LAB.get_or_init(|| {
        // Not yet in CI's `./run test`: these boots have not passed on a
        // CI-like run yet (see README, "End-to-end migrations").
        if std::env::var_os("FERRY_E2E").is_none_or(|v| v.is_empty()) {
            eprintln!("e2e: not run: set FERRY_E2E=1 to boot the migrations (about 25 minutes)");
            return None;
        }
        if let Some(why) = lab::missing_prerequisite() {
            eprintln!("e2e: cannot run: {why}");
            return None;
        }
        Some(Lab::start(&work(), None))
    })
    .as_ref()
}

/// The captured source image's name, and the source disk's size.
const SOURCE_IMAGE: &str = "e2e-source";

/// Captures the source offline once per test run; returns its disk size.
fn source(lab: &Lab) -> u64 {
    static SOURCE: OnceLock<u64> = OnceLock::new();
    *SOURCE.get_or_init(|| {
        let fixture = debian_ide_fixture().join("debian-ide.img");
        let disk = lab.dir.join("source.img");
        ok(Command::new("cp")
            .arg("--sparse=always")
            .arg(&fixture)
            .arg(&disk));
        let disk_size = std::fs::metadata(&disk).expect("source disk").len();
        let c = {
            let _one = VMS.lock().unwrap_or_else(|e| e.into_inner());
            lab.capture_offline(&lab::source_hardware(), &disk, SOURCE_IMAGE)
        };
        eprintln!(
            "e2e: offline capture: read {} MiB of a {} MiB disk, stored {} MiB, in {:.0} s ({:.1} MiB/s in the guest)",
            c.bytes_read >> 20,
            disk_size >> 20,
            c.bytes_stored >> 20,
            c.capture.as_secs_f64(),
            c.bytes_read as f64 / (1 << 20) as f64 / c.capture.as_secs_f64()
        );
        // Used blocks only, compressed: well under the disk's size.
        assert!(c.bytes_read > 0 && c.bytes_read < disk_size / 2);
        assert!(c.bytes_stored > 0 && c.bytes_stored < c.bytes_read);
        // Every chunk of the library is whole.
        ok(Command::new(ferry_tests::ferry_bin())
            .arg("--library")
            .arg(lab.mgr.library())
            .args(["image", "verify", SOURCE_IMAGE]));
        disk_size
    })
}

/// Migrates the source onto `hw` with a blank `size`-byte disk; logs in
/// and runs `check`; returns the migration and what the check printed.
fn migrate(lab: &Lab, hw: &Hardware, size: u64, check: &str) -> (Migration, String) {
    source(lab);
    let disk = blank_disk(&lab.dir.join(format!("{}.img", hw.name)), size);
    let _one = VMS.lock().unwrap_or_else(|e| e.into_inner());
    let mut m = lab.migrate(SOURCE_IMAGE, hw, &disk);
    let out =
        m.vm.login_and_run("root", "ferry", check)
            .unwrap_or_else(|e| panic!("{}: logging in: {e}", hw.name));
    (m, out)
}

/// The first-boot report says the migrated source is up and on the
/// network.
fn assert_first_boot(name: &str, m: &Migration) {
    let fb = &m.first_boot;
    assert_eq!(fb["hostname"], "src-server", "{name}: {fb:#}");
    let state = fb["system_state"].as_str().unwrap_or("");
    assert!(
        state == "running" || state == "degraded",
        "{name}: system state {state:?}: {fb:#}"
    );
    let addrs = fb["addresses"].to_string();
    assert!(addrs.contains("10.0.2.15/24"), "{name}: {fb:#}");
}

#[test]
fn bios_ide_to_uefi_nvme_bigger_disk_by_pxe() {
    let Some(lab) = lab() else {
        eprintln!("SKIPPED bios_ide_to_uefi_nvme_bigger_disk_by_pxe");
        return;
    };
    let hw = lab::uefi_nvme_target();
    let (m, check) = migrate(
        lab,
        &hw,
        4 * GIB,
        "findmnt -n -b -o SOURCE,SIZE /; ls /sys/firmware/efi >/dev/null && echo UEFI-BOOTED; \
         sfdisk -l /dev/nvme0n1 | grep -i 'label type'; ip -4 -o addr show scope global",
    );
    assert_first_boot(&hw.name, &m);
    assert!(check.contains("UEFI-BOOTED"), "{check}");
    assert!(check.contains("gpt"), "MBR → GPT: {check}");
    assert!(check.contains("inet 10.0.2.15/24"), "{check}");
    // The root file system grew into the bigger disk.
    let root_size: u64 = check
        .lines()
        .find(|l| l.starts_with("/dev/nvme0n1"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    assert!(
        root_size > source(lab),
        "root not grown: {root_size} bytes:\n{check}"
    );
    assert!(deploy_sum(&m.deploy, "bytes_fetched") > 0, "{:#}", m.deploy);
}

#[test]
fn bios_ide_to_virtio_smaller_disk_file_tree() {
    let Some(lab) = lab() else {
        eprintln!("SKIPPED bios_ide_to_virtio_smaller_disk_file_tree");
        return;
    };
    let hw = Hardware {
        name: "bios-virtio-small".into(),
        uefi: false,
        machine: "pc",
        bus: DiskBus::Virtio,
        nic: "e1000e",
        mac: "52:54:00:e2:e0:03".into(),
        memory_mib: 1024,
    };
    let (m, check) = migrate(
        lab,
        &hw,
        3 * GIB / 2,
        "findmnt -n -b -o SOURCE,SIZE,UUID /; ip -4 -o addr show scope global",
    );
    assert_first_boot(&hw.name, &m);
    assert!(check.contains("/dev/vda1"), "{check}");
    // The fixture's root UUID survives the new file system.
    assert!(
        check.contains("6a3b1f0e-5c2d-4e7a-9b81-f3e0c2d4a5b6"),
        "{check}"
    );
    assert!(check.contains("inet 10.0.2.15/24"), "{check}");
    let methods = m.deploy.to_string();
    assert!(
        methods.contains(r#""method":"tree""#),
        "not a file-tree deploy: {methods}"
    );
}
