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
//! **What runs when** (`$FERRY_E2E`):
//! - unset (as in `./run test` and CI): the two migrations above, side by
//!   side (one TCG guest per core) after the one shared capture;
//! - `full`: the whole matrix, which adds the tests marked *full* below
//!   (`#[ignore]`d otherwise: a default run lists them as ignored);
//! - `0`: none (for a quick local run).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use ferry_tests::lab::{self, blank_disk, deploy_sum, DiskBus, Hardware, Lab, Migration};
use ferry_tests::{debian_ide_fixture, debian_split_fixture, ok};

const GIB: u64 = 1 << 30;

fn work() -> PathBuf {
    PathBuf::from(std::env::var("FERRY_TEST_WORK").unwrap_or_else(|_| "/var/tmp/ferry-e2e".into()))
}

/// `$FERRY_E2E`: `0` runs nothing, `full` the whole matrix.
fn mode() -> String {
    std::env::var("FERRY_E2E").unwrap_or_default()
}

/// The lab, started once per test run; `None` (with the reason printed)
/// when this machine cannot run it.
fn lab() -> Option<&'static Lab> {
    static LAB: OnceLock<Option<Lab>> = OnceLock::new();
    LAB.get_or_init(|| {
        if mode() == "0" {
            eprintln!("e2e: not run: FERRY_E2E=0");
            return None;
        }
        if let Some(why) = lab::missing_prerequisite() {
            ferry_tests::skip("e2e", &why);
            return None;
        }
        Some(Lab::start(&work(), None))
    })
    .as_ref()
}

/// The captured source image's name, and the source disk's size.
const SOURCE_IMAGE: &str = "e2e-source";

/// Captures the source offline once per test run (a test that needs it
/// while another captures waits); returns its disk size.
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
        let c = lab.capture_offline(&lab::source_hardware(), &disk, SOURCE_IMAGE);
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
    // The agent ran on the target itself: the firmware got a boot entry
    // for the migrated OS (kept in the machine's NVRAM file).
    let how = m.adapt["bootloader"]["how"].as_str().unwrap_or("");
    assert!(how.contains("NVRAM entry \"debian\" added"), "{how}");
    let nvram = std::fs::read(lab.dir.join(format!("{}.vars.fd", hw.name))).expect("NVRAM");
    let loader: Vec<u8> = "\\EFI\\debian\\grubx64.efi"
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    assert!(
        nvram.windows(loader.len()).any(|w| w == loader.as_slice()),
        "no boot entry for \\EFI\\debian\\grubx64.efi in the NVRAM"
    );
}

#[test]
fn bios_ide_to_virtio_smaller_disk_file_tree() {
    let Some(lab) = lab() else {
        eprintln!("SKIPPED bios_ide_to_virtio_smaller_disk_file_tree");
        return;
    };
    let hw = bios_target("bios-virtio-small", "pc", DiskBus::Virtio, "e1000e", 3);
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
    // The files' chunks crossed the network: at least the root's stored
    // data, the same order as a block deploy fetches.
    let fetched = deploy_sum(&m.deploy, "bytes_fetched");
    assert!(fetched > 100 << 20, "fetched {fetched}: {:#}", m.deploy);
}

/// For a test of the full matrix: the lab and the captured source's disk
/// size, or `None` (said why) when the test does not run.
fn full_lab(test: &str) -> Option<(&'static Lab, u64)> {
    let Some(lab) = lab() else {
        eprintln!("SKIPPED {test}");
        return None;
    };
    Some((lab, source(lab)))
}

/// A BIOS machine of the lab, its MAC ending in `n`.
fn bios_target(
    name: &str,
    machine: &'static str,
    bus: DiskBus,
    nic: &'static str,
    n: u8,
) -> Hardware {
    Hardware {
        name: name.into(),
        uefi: false,
        machine,
        bus,
        nic,
        mac: format!("52:54:00:e2:e0:{n:02x}"),
        memory_mib: 1024,
    }
}

/// The changed source's image (child of [`SOURCE_IMAGE`]).
const CHANGED_IMAGE: &str = "e2e-source-changed";
/// What the change adds to the source: incompressible, so every byte of it
/// must travel.
const CHANGE_MIB: u64 = 32;

/// Changes the (powered-off) source: writes [`CHANGE_MIB`] MiB of random
/// data to `/root/change.bin` on its root file system, and captures it
/// again as [`CHANGED_IMAGE`] with the first image as its parent. Returns
/// the new file's sha256.
fn change_source(lab: &Lab) -> String {
    let disk = lab.dir.join("source.img");
    let mnt = tempfile::tempdir().expect("mount point");
    let sha = ok(Command::new("sh").arg("-c").arg(format!(
        "set -e; dev=$(losetup --find --show {disk}); trap 'partx -d $dev; losetup -d $dev' EXIT; \
         partx -a $dev; mount ${{dev}}p1 {mnt}; \
         head -c {CHANGE_MIB}M /dev/urandom > {mnt}/root/change.bin; \
         sha256sum {mnt}/root/change.bin | cut -d' ' -f1; umount {mnt}",
        disk = disk.display(),
        mnt = mnt.path().display()
    )));
    ok(Command::new(ferry_tests::ferry_bin())
        .arg("--library")
        .arg(lab.mgr.library())
        .args(["capture", "--disk"])
        .arg(&disk)
        .args(["--name", CHANGED_IMAGE, "--parent", SOURCE_IMAGE]));
    sha.trim().to_string()
}

/// *full*: the migrated server is deployed again, onto the same disk,
/// after a small change in the source. Seeding finds the rest on the
/// disk: only the changed chunks travel.
#[test]
#[ignore = "full matrix: FERRY_E2E=full"]
fn redeploy_after_a_small_change_fetches_only_what_changed() {
    let Some((lab, size)) = full_lab("redeploy_after_a_small_change_fetches_only_what_changed")
    else {
        return;
    };
    // Same size and firmware as the source: block streams in place.
    let hw = bios_target("bios-virtio-redeploy", "pc", DiskBus::Virtio, "rtl8139", 4);
    let (mut first, _) = migrate(lab, &hw, size, "true");
    let first_fetched = deploy_sum(&first.deploy, "bytes_fetched");
    first.vm.type_line("poweroff");
    if let Err(e) = first.vm.wait_exit(std::time::Duration::from_secs(180)) {
        panic!("{}: did not power off: {e}", hw.name);
    }
    let sha = change_source(lab);

    // The disk boots the migrated OS now: the network goes first.
    let disk = lab.dir.join(format!("{}.img", hw.name));
    let boot = lab::Boot {
        from: lab::BootFrom::Pxe,
        known: std::slice::from_ref(&first.agent),
        log: format!("{}-again", hw.name),
    };
    // Booted by PXE once: the job's reboot goes to the disk.
    let mut again = lab.deploy_with(CHANGED_IMAGE, &hw, &disk, &boot, |_| {
        lab.boot_disk_next(&hw)
    });
    let (fetched, seeded, written) = (
        deploy_sum(&again.deploy, "bytes_fetched"),
        deploy_sum(&again.deploy, "bytes_seeded"),
        deploy_sum(&again.deploy, "bytes_written"),
    );
    eprintln!(
        "e2e: redeploy: fetched {} MiB (first deploy {} MiB), seeded {} MiB, written {} MiB; \
         the change was {CHANGE_MIB} MiB",
        fetched >> 20,
        first_fetched >> 20,
        seeded >> 20,
        written >> 20
    );
    assert_first_boot(&hw.name, &again);
    let out = again
        .vm
        .login_and_run("root", "ferry", "sha256sum /root/change.bin")
        .unwrap_or_else(|e| panic!("{}: logging in: {e}", hw.name));
    assert!(out.contains(&sha), "the change is not on the target: {out}");
    // The change is random, so all of it travels; besides it, what the
    // first boot and adapt changed on the disk (the journal, the adapted
    // initramfs and GRUB files), nothing more.
    let change = CHANGE_MIB << 20;
    assert!(fetched >= change, "fetched {fetched} < the change {change}");
    assert!(
        fetched <= change + first_fetched / 5,
        "fetched {fetched}: more than the change ({change}) plus a fifth of the first deploy ({first_fetched})"
    );
    assert!(seeded > written, "seeded {seeded}, written {written}");
}

/// *full*: the network cable of a deploying target is pulled for 30 s
/// after 150 MiB of its deploy; the deploy resumes by itself and the
/// server boots. Beside it, the same deploy runs uncut. The bytes each
/// one's `ferry serve` sent while its deploy step ran are counted on the
/// wire (an nftables counter on its port): the cut one may exceed the
/// uncut one by ≤ 5 % (what was in flight and is fetched again).
#[test]
#[ignore = "full matrix: FERRY_E2E=full"]
fn a_deploy_survives_a_pulled_cable() {
    let Some((lab, size)) = full_lab("a_deploy_survives_a_pulled_cable") else {
        return;
    };
    let cut_secs: u64 = std::env::var("FERRY_E2E_CUT_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let (cut, uncut) = std::thread::scope(|s| {
        let cut = s.spawn(|| {
            let hw = bios_target("bios-ahci-cut", "q35", DiskBus::Sata, "e1000e", 5);
            counted_deploy(lab, &hw, size, cut_secs)
        });
        let uncut = s.spawn(|| {
            let hw = bios_target("bios-ahci-uncut", "q35", DiskBus::Sata, "e1000e", 6);
            counted_deploy(lab, &hw, size, 0)
        });
        (
            cut.join().unwrap_or_else(|e| std::panic::resume_unwind(e)),
            uncut
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e)),
        )
    });
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let again = cut.saturating_sub(uncut);
    eprintln!(
        "e2e: on the wire while the deploy step ran: {:.1} MiB uncut, {:.1} MiB with the cable \
         pulled for {cut_secs} s: {:.1} MiB ({:.1} %) fetched again",
        mib(uncut),
        mib(cut),
        mib(again),
        again as f64 * 100.0 / uncut as f64
    );
    assert!(
        again <= uncut / 20,
        "{again} bytes fetched again of {uncut}: more than 5 %"
    );
}

/// Deploys the source onto `hw` through a manager of its own over the
/// lab's library (managers are stateless), so that a wire counter on its
/// port sees this deploy only; pulls the cable for `cut_secs` after 150
/// MiB (none for 0). Returns the bytes the server sent while the deploy
/// step ran; the migrated server must boot and report.
fn counted_deploy(lab: &Lab, hw: &Hardware, size: u64, cut_secs: u64) -> u64 {
    let own = Lab::start(
        &work().with_file_name(format!("ferry-e2e-{}", hw.name)),
        Some(&lab.mgr.library()),
    );
    let port = own.mgr.url().rsplit(':').next().expect("port").to_string();
    let counter = WireCounter::new(&port);
    let disk = blank_disk(&own.dir.join(format!("{}.img", hw.name)), size);
    let window = std::sync::Mutex::new(0u64);
    let m = own.deploy_with(SOURCE_IMAGE, hw, &disk, &lab::Boot::first(hw), |agent| {
        let start = counter.bytes();
        let t = std::time::Instant::now();
        let wait = |what: &str, done: &dyn Fn() -> bool| {
            while !done() {
                assert!(
                    t.elapsed() < std::time::Duration::from_secs(1200),
                    "{}: {what} did not happen",
                    hw.name
                );
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        };
        if cut_secs > 0 {
            wait("150 MiB of the deploy", &|| {
                counter.bytes() - start >= 150 << 20
            });
            own.set_link(hw, false);
            std::thread::sleep(std::time::Duration::from_secs(cut_secs));
            own.set_link(hw, true);
        }
        // The deploy step's end: the agent has answered command 1 and
        // is no longer busy (read from the store's files, off the wire).
        wait("the deploy step's end", &|| {
            own.mgr
                .mailbox_file_on_disk(agent, "status.json")
                .is_some_and(|s| {
                    s["last_command"].as_u64().unwrap_or(0) >= 1 && s["state"] != "busy"
                })
        });
        *window.lock().expect("window") = counter.bytes() - start;
    });
    assert_first_boot(&hw.name, &m);
    let wire = *window.lock().expect("window");
    eprintln!(
        "e2e: {}: {:.1} MiB on the wire while the deploy step ran, {} MiB of chunks fetched",
        hw.name,
        wire as f64 / (1 << 20) as f64,
        deploy_sum(&m.deploy, "bytes_fetched") >> 20
    );
    wire
}

/// An nftables counter of the bytes (whole packets) a local server port
/// sends (over loopback: QEMU's user network connects from 127.0.0.1).
struct WireCounter {
    table: String,
}

impl WireCounter {
    fn new(port: &str) -> WireCounter {
        let table = format!("ferry_e2e_{port}");
        let rules = tempfile::NamedTempFile::new().expect("nft rules file");
        std::fs::write(
            rules.path(),
            format!(
                "table inet {table} {{\n counter served {{ }}\n chain out {{\n  \
                 type filter hook output priority 0; policy accept;\n  \
                 tcp sport {port} counter name served\n }}\n}}\n"
            ),
        )
        .expect("writing the nft rules");
        ok(Command::new("nft").arg("-f").arg(rules.path()));
        WireCounter { table }
    }

    fn bytes(&self) -> u64 {
        let out = ok(Command::new("nft").args(["list", "counter", "inet", &self.table, "served"]));
        out.split_whitespace()
            .skip_while(|w| *w != "bytes")
            .nth(1)
            .and_then(|b| b.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for WireCounter {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &self.table])
            .output();
    }
}

/// The split source's machine (the IDE source's hardware). The lab gives
/// its disk the serial `FERRYSPLITSOURCE`, from this name: the serial that
/// the fixture's by-id root names (`tests/fixtures/debian-split.sh`).
const SPLIT_SOURCE: &str = "split-source";
/// The split source's captured image.
const SPLIT_IMAGE: &str = "e2e-split-source";
/// The split fixture's file systems: /boot, swap and root.
const SPLIT_BOOT_UUID: &str = "5c1d7e2a-3b4f-4a60-8d19-2e7f0a6b1c01";
const SPLIT_SWAP_UUID: &str = "5c1d7e2a-3b4f-4a60-8d19-2e7f0a6b1c02";
const SPLIT_ROOT_UUID: &str = "5c1d7e2a-3b4f-4a60-8d19-2e7f0a6b1c03";

/// *full*: a source laid out as many installed servers are (MBR: /boot,
/// swap, root; its fstab naming the root by-id, /boot by `LABEL=` and swap
/// by `/dev/disk/by-label`) is captured offline and migrates by PXE onto a
/// Q35 machine with a virtio disk (bigger) and a virtio NIC. On the new
/// hardware /boot comes from the target disk's partition 1, the swap
/// partition is in use, and the fstab names all three by the UUIDs they
/// kept.
#[test]
#[ignore = "full matrix: FERRY_E2E=full"]
fn split_boot_and_swap_by_label_and_id_to_q35_virtio() {
    const TEST: &str = "split_boot_and_swap_by_label_and_id_to_q35_virtio";
    let Some(lab) = lab() else {
        eprintln!("SKIPPED {TEST}");
        return;
    };
    let t = std::time::Instant::now();
    let fixture = debian_split_fixture().join("debian-split.img");
    eprintln!(
        "e2e: split source fixture ready in {:.0} s",
        t.elapsed().as_secs_f64()
    );
    let disk = lab.dir.join(format!("{SPLIT_SOURCE}.img"));
    ok(Command::new("cp")
        .arg("--sparse=always")
        .arg(&fixture)
        .arg(&disk));
    let source_hw = bios_target(SPLIT_SOURCE, "pc", DiskBus::Ide, "e1000", 7);
    let c = lab.capture_offline(&source_hw, &disk, SPLIT_IMAGE);
    eprintln!(
        "e2e: split source: agent after {:.0} s, offline capture of {} MiB (stored {} MiB) in {:.0} s",
        c.agent_after.as_secs_f64(),
        c.bytes_read >> 20,
        c.bytes_stored >> 20,
        c.capture.as_secs_f64()
    );
    ok(Command::new(ferry_tests::ferry_bin())
        .arg("--library")
        .arg(lab.mgr.library())
        .args(["image", "verify", SPLIT_IMAGE]));

    let hw = bios_target(
        "split-q35-virtio",
        "q35",
        DiskBus::Virtio,
        "virtio-net-pci",
        8,
    );
    let target = blank_disk(&lab.dir.join(format!("{}.img", hw.name)), 3 * GIB);
    let mut m = lab.migrate(SPLIT_IMAGE, &hw, &target);
    eprintln!(
        "e2e: {}: agent by PXE after {:.0} s, deploy+adapt+reboot {:.0} s, login: {:.0} s \
         after the reboot, first-boot report {:.0} s later; adapt warnings: {}",
        hw.name,
        m.agent_after.as_secs_f64(),
        m.deploy_time.as_secs_f64(),
        m.login_after.as_secs_f64(),
        m.report_after.as_secs_f64(),
        m.adapt["warnings"]
    );
    let check =
        m.vm.login_and_run(
            "root",
            "ferry",
            "findmnt -n -o SOURCE,UUID /; findmnt -n -o SOURCE,UUID /boot; \
             swapon --show=NAME,TYPE,UUID --noheadings; sed -n 's/^[^#]/fstab: &/p' /etc/fstab; \
             systemctl --failed --no-legend",
        )
        .unwrap_or_else(|e| panic!("{}: logging in: {e}", hw.name));
    eprintln!("e2e: {}: console check:\n{check}", hw.name);
    assert_first_boot(&hw.name, &m);
    let has_line = |words: &[&str]| {
        check.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() >= words.len() && f.iter().zip(words).all(|(a, b)| a == b)
        })
    };
    // Root and /boot on the target disk, with the source's UUIDs; the swap
    // partition in use.
    assert!(has_line(&["/dev/vda3", SPLIT_ROOT_UUID]), "/: {check}");
    assert!(has_line(&["/dev/vda1", SPLIT_BOOT_UUID]), "/boot: {check}");
    assert!(
        has_line(&["/dev/vda2", "partition", SPLIT_SWAP_UUID]),
        "swap: {check}"
    );
    // The fstab: LABEL=, by-label and by-id became UUID=.
    let fstab: Vec<Vec<&str>> = check
        .lines()
        .filter_map(|l| l.strip_prefix("fstab: "))
        .map(|l| l.split_whitespace().collect())
        .collect();
    let spec = |mount_point: &str, fs_type: &str| {
        fstab
            .iter()
            .find(|f| f.len() >= 3 && f[1] == mount_point && f[2] == fs_type)
            .map(|f| f[0])
    };
    let uuid = |u: &str| format!("UUID={u}");
    assert_eq!(
        spec("/", "ext4"),
        Some(uuid(SPLIT_ROOT_UUID).as_str()),
        "{check}"
    );
    assert_eq!(
        spec("/boot", "ext4"),
        Some(uuid(SPLIT_BOOT_UUID).as_str()),
        "{check}"
    );
    assert_eq!(
        spec("none", "swap"),
        Some(uuid(SPLIT_SWAP_UUID).as_str()),
        "{check}"
    );
}

/// *full*: direct migration between two running agents. The IDE source
/// boots the agent ISO while the UEFI/NVMe target (bigger disk) boots by
/// PXE; `ferry migrate --from ... --to ... --adapt --reboot
/// --poweroff-source` streams the source's disk to the target as it is
/// read, through the relay in `ferry serve`'s library, never storing it.
/// The target boots the migrated OS and reports; the library holds no new
/// image and no relay segment.
#[test]
#[ignore = "full matrix: FERRY_E2E=full"]
fn direct_migration_between_two_agents_to_uefi_nvme() {
    let Some(lab) = lab() else {
        eprintln!("SKIPPED direct_migration_between_two_agents_to_uefi_nvme");
        return;
    };
    let fixture = debian_ide_fixture().join("debian-ide.img");
    let src_disk = lab.dir.join("direct-source.img");
    ok(Command::new("cp")
        .arg("--sparse=always")
        .arg(&fixture)
        .arg(&src_disk));
    let size = std::fs::metadata(&src_disk).expect("source disk").len();
    let src_hw = Hardware {
        name: "direct-source".into(),
        mac: "52:54:00:e2:e0:11".into(),
        ..lab::source_hardware()
    };
    let hw = Hardware {
        name: "direct-nvme".into(),
        mac: "52:54:00:e2:e0:12".into(),
        ..lab::uefi_nvme_target()
    };
    let disk = blank_disk(&lab.dir.join("direct-nvme.img"), size + GIB);
    let mut d = lab.migrate_direct("direct-web", &src_hw, &src_disk, &hw, &disk);
    let m = &d.target;
    assert_first_boot("direct", m);
    let stats = &d.sent["stats"];
    let (read, sent) = (
        stats["bytes_read"].as_u64().unwrap_or(0),
        stats["bytes_sent"].as_u64().unwrap_or(0),
    );
    let received = deploy_sum(&m.deploy, "bytes_fetched");
    eprintln!(
        "e2e: direct: agents up in {:.0} s; migrate (send, receive, adapt) {:.0} s; \
         {} MiB read, {} MiB relayed, {} MiB received; login {:.0} s after the reboot",
        d.agents_after.as_secs_f64(),
        m.deploy_time.as_secs_f64(),
        read >> 20,
        sent >> 20,
        received >> 20,
        m.login_after.as_secs_f64()
    );
    assert!(read > 500 << 20 && sent < read, "{:#}", d.sent);
    assert!(
        received <= sent && sent - received < 1 << 20,
        "{:#}",
        m.deploy
    );
    // Other tests share the lab's library; none of them uses this label.
    let images = lab_images(lab);
    assert!(
        !images.contains("direct-web"),
        "a direct migration stores no image: {images}"
    );
    let relay = lab.mgr.library().join("relay");
    let left: Vec<_> = std::fs::read_dir(&relay)
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "relay objects left: {left:?}");
    let out = d
        .target
        .vm
        .login_and_run(
            "root",
            "ferry",
            "findmnt -no SOURCE /; test -d /sys/firmware/efi && echo booted-uefi",
        )
        .unwrap_or_else(|e| panic!("direct: logging in: {e}"));
    assert!(
        out.contains("/dev/nvme0n1") && out.contains("booted-uefi"),
        "{out}"
    );
}

/// The images in the lab's library.
fn lab_images(lab: &Lab) -> String {
    ok(Command::new(ferry_tests::ferry_bin())
        .arg("--library")
        .arg(lab.mgr.library())
        .args(["image", "ls"]))
}
