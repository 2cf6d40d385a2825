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

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use ferry_tests::lab::{self, blank_disk, deploy_sum, BootFrom, DiskBus, Hardware, Lab};
use ferry_tests::{debian_ide_fixture, ok};

const GIB: u64 = 1 << 30;
/// An agent comes up in ~10 s of kernel time under TCG; firmware, PXE and
/// the ramdisk's load come first. Room for a loaded CI machine.
const AGENT_TIMEOUT: Duration = Duration::from_secs(300);
/// A Debian boot to `login:` takes 40–90 s under TCG.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(600);

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
        if let Some(why) = lab::missing_prerequisite() {
            eprintln!("e2e: cannot run: {why}");
            return None;
        }
        Some(Lab::start(&work()))
    })
    .as_ref()
}

/// What the offline capture of the source produced.
struct Source {
    image: String,
    /// Bytes of the source disk.
    disk_size: u64,
}

fn source_hardware() -> Hardware {
    Hardware {
        name: "source".into(),
        uefi: false,
        machine: "pc",
        bus: DiskBus::Ide,
        nic: "e1000",
        mac: "52:54:00:e2:e0:01".into(),
        memory_mib: 1024,
    }
}

/// Boots the source from the agent ISO, captures its disk offline through
/// the manager and powers it off; once per test run.
fn source(lab: &Lab) -> &'static Source {
    static SOURCE: OnceLock<Source> = OnceLock::new();
    SOURCE.get_or_init(|| {
        let fixture = debian_ide_fixture().join("debian-ide.img");
        let disk = lab.dir.join("source.img");
        ok(Command::new("cp")
            .arg("--sparse=always")
            .arg(&fixture)
            .arg(&disk));
        let disk_size = std::fs::metadata(&disk).expect("source disk").len();
        let hw = source_hardware();
        let _one = VMS.lock().unwrap_or_else(|e| e.into_inner());
        let mut vm = lab.boot(&hw, &disk, BootFrom::Iso, "source");
        let t = Instant::now();
        let id = lab.wait_for_agent(&hw, AGENT_TIMEOUT);
        eprintln!(
            "e2e: source agent {id} reported after {:.0} s",
            t.elapsed().as_secs_f64()
        );
        let image = "e2e-source".to_string();
        let job = lab.job(&[
            "capture",
            "--agent",
            &id,
            "--name",
            &image,
            "--disk",
            DiskBus::Ide.guest_path(),
            "--poweroff",
        ]);
        let stats = &job.result(0)["stats"];
        let read = stats["bytes_read"].as_u64().unwrap_or(0);
        let stored = stats["stored_new"].as_u64().unwrap_or(0);
        eprintln!(
            "e2e: offline capture: read {} MiB of a {} MiB disk, stored {} MiB, in {:.0} s ({:.1} MiB/s in the guest)",
            read >> 20,
            disk_size >> 20,
            stored >> 20,
            job.elapsed.as_secs_f64(),
            read as f64 / (1 << 20) as f64 / job.elapsed.as_secs_f64()
        );
        // Used blocks only, compressed: well under the disk's size.
        assert!(read > 0 && read < disk_size / 2, "{stats:#}");
        assert!(stored > 0 && stored < read, "{stats:#}");
        if let Err(e) = vm.wait_exit(Duration::from_secs(120)) {
            panic!("the source did not power off after its capture: {e}");
        }
        // Every chunk of the library is whole.
        ok(Command::new(ferry_tests::ferry_bin())
            .arg("--library")
            .arg(lab.mgr.library())
            .args(["image", "verify", &image]));
        Source { image, disk_size }
    })
}

/// What a migrated server said.
struct Migrated {
    /// Its first-boot report (the agent's status `first_boot`).
    first_boot: serde_json::Value,
    /// What the check command printed once logged in.
    check: String,
    /// The deploy's report.
    deploy: serde_json::Value,
}

/// Boots `hw` with a blank `size`-byte disk; it falls through to PXE and
/// the agent; deploys the source onto it, adapts and reboots; waits for
/// `login:` and the first-boot report; logs in and runs `check`.
fn migrate(lab: &Lab, hw: &Hardware, size: u64, check: &str) -> Migrated {
    let src = source(lab);
    let disk = blank_disk(&lab.dir.join(format!("{}.img", hw.name)), size);
    let _one = VMS.lock().unwrap_or_else(|e| e.into_inner());
    let mut vm = lab.boot(hw, &disk, BootFrom::DiskThenPxe, &hw.name);
    let t = Instant::now();
    let id = lab.wait_for_agent(hw, AGENT_TIMEOUT);
    eprintln!(
        "e2e: {}: agent {id} reported by PXE after {:.0} s",
        hw.name,
        t.elapsed().as_secs_f64()
    );
    let firmware = if hw.uefi { "uefi" } else { "bios" };
    let job = lab.job(&[
        "deploy",
        &src.image,
        "--agent",
        &id,
        "--target",
        hw.bus.guest_path(),
        "--firmware",
        firmware,
        "--adapt",
        "--reboot",
    ]);
    let deploy = job.result(0)["deploy"].clone();
    eprintln!(
        "e2e: {}: deployed and adapted in {:.0} s: {} MiB written, {} MiB fetched",
        hw.name,
        job.elapsed.as_secs_f64(),
        deploy_sum(&deploy, "bytes_written") >> 20,
        deploy_sum(&deploy, "bytes_fetched") >> 20
    );
    let from = vm.console().len();
    let t = Instant::now();
    if let Err(e) = vm.wait_for_after("login:", from, LOGIN_TIMEOUT) {
        panic!("{}: the migrated server did not reach login:\n{e}", hw.name);
    }
    eprintln!(
        "e2e: {}: login: {:.0} s after the reboot",
        hw.name,
        t.elapsed().as_secs_f64()
    );
    let status = lab.wait_for_state(&id, "booted", Duration::from_secs(300));
    let check = vm
        .login_and_run("root", "ferry", check)
        .unwrap_or_else(|e| panic!("{}: logging in: {e}", hw.name));
    Migrated {
        first_boot: status["first_boot"].clone(),
        check,
        deploy,
    }
}

/// The first-boot report says the migrated source is up and on the
/// network.
fn assert_first_boot(name: &str, m: &Migrated) {
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
    let hw = Hardware {
        name: "uefi-nvme".into(),
        uefi: true,
        machine: "q35",
        bus: DiskBus::Nvme,
        nic: "virtio-net-pci",
        mac: "52:54:00:e2:e0:02".into(),
        memory_mib: 1024,
    };
    let m = migrate(
        lab,
        &hw,
        4 * GIB,
        "findmnt -n -b -o SOURCE,SIZE /; ls /sys/firmware/efi >/dev/null && echo UEFI-BOOTED; \
         sfdisk -l /dev/nvme0n1 | grep -i 'label type'; ip -4 -o addr show scope global",
    );
    assert_first_boot(&hw.name, &m);
    assert!(m.check.contains("UEFI-BOOTED"), "{}", m.check);
    assert!(m.check.contains("gpt"), "MBR → GPT: {}", m.check);
    assert!(m.check.contains("inet 10.0.2.15/24"), "{}", m.check);
    // The root file system grew into the bigger disk.
    let root_size: u64 = m
        .check
        .lines()
        .find(|l| l.starts_with("/dev/nvme0n1"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    assert!(
        root_size > source(lab).disk_size,
        "root not grown: {root_size} bytes:\n{}",
        m.check
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
    let m = migrate(
        lab,
        &hw,
        3 * GIB / 2,
        "findmnt -n -b -o SOURCE,SIZE,UUID /; ip -4 -o addr show scope global",
    );
    assert_first_boot(&hw.name, &m);
    assert!(m.check.contains("/dev/vda1"), "{}", m.check);
    // The fixture's root UUID survives the new file system.
    assert!(
        m.check.contains("6a3b1f0e-5c2d-4e7a-9b81-f3e0c2d4a5b6"),
        "{}",
        m.check
    );
    assert!(m.check.contains("inet 10.0.2.15/24"), "{}", m.check);
    let methods = m.deploy.to_string();
    assert!(
        methods.contains(r#""method":"tree""#),
        "not a file-tree deploy: {methods}"
    );
}
