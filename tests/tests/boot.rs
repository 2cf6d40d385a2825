//! Issue 6's acceptance for the agent's boot media: `ferry boot
//! initramfs|iso|pxe` and `ferry agent` in PID-1 mode.
//!
//! Without a VM: the ramdisk's contents and size, the ISO's EFI image
//! (`fsck.fat -n`), the PXE directory, and `ferry agent --no-pid1` on a
//! fixture root writing its status and heartbeat into a file:// mailbox.
//!
//! Under QEMU (TCG), four boots, one at a time: the ISO under SeaBIOS
//! (virtio disk, e1000), the ISO under OVMF (NVMe disk, virtio-net), the
//! PXE directory through QEMU's TFTP and its iPXE ROM (AHCI disk, e1000),
//! and a ramdisk built without virtio_blk on a virtio disk, which must
//! say `FATAL: no disks` and offer a working rescue shell. Each boot
//! checks the agent's survey line against the VM's real PCI ids, disks
//! and NIC, and records the kernel-start → ready time, the kernel-start →
//! first-heartbeat time (≤ 60 s asserted) and the idle RSS (≤ 30 MiB
//! asserted, issue 6) in `$FERRY_TEST_LOGS` (default
//! `/var/tmp/ferry-boot-logs`).
//!
//! The media need the static agent (`boot/build-agent.sh`, which `./run
//! test` runs), Debian's linux-image-amd64, busybox-static, xorriso,
//! grub-pc-bin, grub-efi-amd64-bin, mtools, dosfstools, ovmf and ipxe-qemu.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use ferry_tests::lab::{agent_bin, host_kernel, missing_prerequisite};
use ferry_tests::manager::Manager;
use ferry_tests::qemu::{Machine, Vm};
use ferry_tests::{ferry_bin, ok, run};

/// Kernel start to `ready` is ~10 s under TCG; the firmware, grub and the
/// ramdisk's load come before it. Leave room for a loaded CI machine.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
const MIB: u64 = 1 << 20;
/// The size target for the compressed ramdisk.
const MAX_INITRD: u64 = 40 * MIB;
/// The idle memory target for the agent (VmRSS, text included).
const MAX_IDLE_RSS_KIB: u64 = 30 * 1024;
/// Kernel start to the agent's first heartbeat at the manager: ~10-20 s
/// under TCG; generous for a loaded 2-core CI machine.
const MAX_KERNEL_TO_HEARTBEAT: Duration = Duration::from_secs(60);

/// One VM at a time.
static BOOTS: Mutex<()> = Mutex::new(());

/// The media, built once per test run.
struct Media {
    dir: PathBuf,
    initrd: PathBuf,
    /// The same ramdisk without virtio_blk.
    initrd_no_virtio_blk: PathBuf,
    iso: PathBuf,
    pxe: PathBuf,
    kernel: PathBuf,
}

/// The extra kernel arguments every test boot passes: heartbeats every
/// 2 s so the idle RSS line comes soon.
const CMDLINE: &str = "ferry.heartbeat=2";

fn logs() -> PathBuf {
    let d = PathBuf::from(
        std::env::var("FERRY_TEST_LOGS").unwrap_or_else(|_| "/var/tmp/ferry-boot-logs".into()),
    );
    std::fs::create_dir_all(&d).expect("log dir");
    d
}

fn boot_cmd() -> Command {
    let mut c = Command::new(ferry_bin());
    c.arg("boot");
    c
}

/// The media for test `test`, or `None` (it says why it is skipped)
/// when this machine cannot build and boot them.
fn media_for(test: &str) -> Option<&'static Media> {
    if let Some(why) = missing_prerequisite() {
        ferry_tests::skip(test, &why);
        return None;
    }
    Some(media())
}

fn media() -> &'static Media {
    static M: OnceLock<Media> = OnceLock::new();
    M.get_or_init(|| {
        let dir = PathBuf::from(
            std::env::var("FERRY_TEST_WORK").unwrap_or_else(|_| "/var/tmp/ferry-boot-tests".into()),
        );
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("work dir");
        let agent = agent_bin();
        let initrd = dir.join("initrd.img");
        ok(boot_cmd()
            .arg("initramfs")
            .arg("--output")
            .arg(&initrd)
            .arg("--agent")
            .arg(&agent));
        let initrd_no_virtio_blk = dir.join("initrd-no-virtio-blk.img");
        ok(boot_cmd()
            .arg("initramfs")
            .arg("--output")
            .arg(&initrd_no_virtio_blk)
            .arg("--agent")
            .arg(&agent)
            .args(["--exclude-module", "virtio_blk"]));
        let iso = dir.join("ferry-agent.iso");
        ok(boot_cmd()
            .arg("iso")
            .arg("--output")
            .arg(&iso)
            .arg("--initrd")
            .arg(&initrd)
            .args(["--cmdline", CMDLINE]));
        let pxe = dir.join("pxe");
        ok(boot_cmd()
            .arg("pxe")
            .arg("--output")
            .arg(&pxe)
            .arg("--initrd")
            .arg(&initrd)
            .args(["--cmdline", CMDLINE]));
        let kernel = host_kernel().expect("a kernel in /boot");
        Media {
            dir,
            initrd,
            initrd_no_virtio_blk,
            iso,
            pxe,
            kernel,
        }
    })
}

/// The ramdisk's member list (zstd -dc | cpio -t).
fn cpio_list(initrd: &Path) -> Vec<String> {
    let out = run(Command::new("sh")
        .arg("-c")
        .arg(format!("zstd -dc {} | cpio -t --quiet", initrd.display())));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

/// One member's content.
fn cpio_file(initrd: &Path, member: &str) -> String {
    let out = run(Command::new("sh").arg("-c").arg(format!(
        "zstd -dc {} | cpio -i --quiet --to-stdout {member}",
        initrd.display()
    )));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn initramfs_holds_the_agent_tools_and_chosen_modules() {
    let Some(m) = media_for("initramfs_holds_the_agent_tools_and_chosen_modules") else {
        return;
    };
    let size = std::fs::metadata(&m.initrd).expect("initrd").len();
    eprintln!(
        "initramfs: {} bytes ({:.1} MiB) zstd",
        size,
        size as f64 / MIB as f64
    );
    assert!(
        size <= MAX_INITRD,
        "ramdisk is {size} bytes, over the 40 MiB target"
    );
    let list = cpio_list(&m.initrd);
    for want in [
        "init",
        "dev/console",
        "dev/null",
        "usr/bin/busybox",
        "usr/bin/sh",
        "usr/sbin/udhcpc",
        "usr/share/udhcpc/default.script",
        "usr/sbin/mke2fs",
        "usr/sbin/mkfs.xfs",
        "usr/sbin/mkfs.vfat",
        "usr/lib64/ld-linux-x86-64.so.2",
        "usr/lib/x86_64-linux-gnu/libc.so.6",
        "usr/lib/x86_64-linux-gnu/libext2fs.so.2",
        "bin",
        "lib64",
    ] {
        assert!(
            list.iter().any(|l| l == want),
            "{want} missing from the ramdisk"
        );
    }
    let modules: Vec<&String> = list
        .iter()
        .filter(|l| l.ends_with(".ko") || l.contains(".ko."))
        .collect();
    for m in [
        "virtio_blk",
        "nvme",
        "ahci",
        "e1000",
        "e1000e",
        "mpt3sas",
        "hv_storvsc",
        "ena",
        "ext4",
        "xfs",
    ] {
        assert!(
            modules.iter().any(|p| p
                .rsplit('/')
                .next()
                .is_some_and(|f| f.starts_with(&format!("{m}.ko")))),
            "module {m} missing"
        );
    }
    assert!(
        modules.len() < 1000,
        "{} modules: the whole tree went in",
        modules.len()
    );
    let v = list
        .iter()
        .find_map(|l| {
            l.strip_prefix("usr/lib/modules/")
                .and_then(|r| r.strip_suffix("/modules.alias"))
        })
        .expect("a modules.alias")
        .to_string();
    let alias = cpio_file(&m.initrd, &format!("usr/lib/modules/{v}/modules.alias"));
    assert!(
        alias.contains(" virtio_blk\n"),
        "modules.alias does not index virtio_blk"
    );
    // The subset's index names only modules in the subset.
    assert!(!alias.contains(" snd_hda_intel\n"));
    // Without virtio_blk: absent from files and index.
    let list2 = cpio_list(&m.initrd_no_virtio_blk);
    assert!(!list2.iter().any(|l| l.contains("virtio_blk.ko")));
    let alias2 = cpio_file(
        &m.initrd_no_virtio_blk,
        &format!("usr/lib/modules/{v}/modules.alias"),
    );
    assert!(!alias2.contains(" virtio_blk\n") && alias2.contains(" virtio_net\n"));
    // Deterministic: the same inputs give the same bytes.
    let again = m.dir.join("again.img");
    ok(boot_cmd()
        .arg("initramfs")
        .arg("--output")
        .arg(&again)
        .arg("--agent")
        .arg(agent_bin()));
    assert!(std::fs::read(&again).expect("again") == std::fs::read(&m.initrd).expect("initrd"));
}

/// The ramdisk's GRUB tools run from the ramdisk itself (their libraries
/// came along): adapt builds a UEFI loader with them when the target OS
/// has only BIOS GRUB, and makes the ESP's directories with `mmd`.
#[test]
fn initramfs_grub_tools_build_an_efi_loader_inside_the_ramdisk() {
    let Some(m) = media_for("initramfs_grub_tools_build_an_efi_loader_inside_the_ramdisk") else {
        return;
    };
    let root = tempfile::tempdir().expect("tempdir");
    ok(Command::new("sh").arg("-c").arg(format!(
        "cd {} && zstd -dc {} | cpio -id --quiet",
        root.path().display(),
        m.initrd.display()
    )));
    for want in [
        "usr/lib/grub/x86_64-efi/kernel.img",
        "usr/lib/grub/x86_64-efi/part_gpt.mod",
        "usr/lib/grub/i386-pc/boot.img",
        "usr/lib/grub/i386-pc/ext2.mod",
    ] {
        assert!(
            root.path().join(want).is_file(),
            "{want} missing from the ramdisk"
        );
    }
    assert!(
        !root
            .path()
            .join("usr/lib/grub/x86_64-efi/monolithic")
            .exists(),
        "the signed monolithic images went in"
    );
    // Inside the ramdisk, as the agent runs it: only the ramdisk's files.
    ok(Command::new("chroot").arg(root.path()).args([
        "/usr/bin/grub-mkimage",
        "-O",
        "x86_64-efi",
        "-d",
        "/usr/lib/grub/x86_64-efi",
        "-p",
        "/boot/grub",
        "-o",
        "/tmp/grubx64.efi",
        "part_gpt",
        "fat",
        "ext2",
        "search_fs_uuid",
        "normal",
        "linux",
    ]));
    let efi = std::fs::read(root.path().join("tmp/grubx64.efi")).expect("grubx64.efi");
    assert!(efi.starts_with(b"MZ"), "grub-mkimage wrote no PE image");
    let fat = root.path().join("tmp/esp.img");
    ok(Command::new("mkfs.fat")
        .args(["-C", "-F", "32"])
        .arg(&fat)
        .arg("65536"));
    ok(Command::new("chroot").arg(root.path()).args([
        "/usr/bin/mmd",
        "-i",
        "/tmp/esp.img",
        "::/EFI",
        "::/EFI/BOOT",
    ]));
    let out = run(Command::new("fsck.fat").arg("-n").arg(&fat));
    assert!(
        out.status.success(),
        "fsck.fat -n after the ramdisk's mmd:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn iso_efi_image_is_fsck_clean_and_pxe_dir_is_complete() {
    let Some(m) = media_for("iso_efi_image_is_fsck_clean_and_pxe_dir_is_complete") else {
        return;
    };
    let efi = m.dir.join("efi.img");
    let _ = std::fs::remove_file(&efi);
    ok(Command::new("xorriso")
        .args(["-osirrox", "on", "-indev"])
        .arg(&m.iso)
        .args(["-extract", "/boot/grub/efi.img"])
        .arg(&efi));
    let out = run(Command::new("fsck.fat").arg("-n").arg(&efi));
    assert!(
        out.status.success(),
        "fsck.fat -n on the ISO's EFI image:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = ok(Command::new("mdir").arg("-i").arg(&efi).arg("::/EFI/BOOT"));
    assert!(dir.contains("BOOTX64") && dir.contains("EFI"), "{dir}");
    // Hybrid: an MBR boot signature and an EFI partition in its table.
    let fdisk = ok(Command::new("fdisk").arg("-l").arg(&m.iso));
    assert!(
        fdisk.contains("EFI"),
        "no EFI partition in the ISO's table:\n{fdisk}"
    );
    for f in [
        "vmlinuz",
        "initrd.img",
        "boot.ipxe",
        "grub.cfg",
        "pxelinux.cfg/default",
    ] {
        assert!(m.pxe.join(f).is_file(), "pxe/{f} missing");
    }
    let ipxe = std::fs::read_to_string(m.pxe.join("boot.ipxe")).expect("boot.ipxe");
    assert!(
        ipxe.starts_with("#!ipxe") && ipxe.contains("kernel vmlinuz ") && ipxe.contains(CMDLINE),
        "{ipxe}"
    );
}

#[test]
fn agent_outside_a_ramdisk_reports_to_a_file_mailbox() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/hw/virtio");
    let mbox = tempfile::tempdir().expect("tmp");
    let out = run(Command::new(ferry_bin())
        .args(["agent", "--no-pid1", "--once", "--root"])
        .arg(&root)
        .arg("--cmdline")
        .arg(format!(
            "quiet ferry.server=file://{} ferry.heartbeat=1",
            mbox.path().display()
        )));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("ferry-agent: survey: 7 pci devices ["),
        "{text}"
    );
    assert!(
        text.contains("1af4:1001") && text.contains("disks: ") && text.contains("vda 2.0 GiB"),
        "{text}"
    );
    assert!(text.contains("ferry-agent: ready"), "{text}");
    let status: serde_json::Value = serde_json::from_slice(
        &std::fs::read(mbox.path().join("status.json")).expect("status.json"),
    )
    .expect("status json");
    assert_eq!(status["state"], "idle");
    assert_eq!(status["survey"]["pci"].as_array().map(Vec::len), Some(7));
    assert_eq!(status["identity"]["macs"][0], "52:54:00:12:34:56");
    let hb: serde_json::Value = serde_json::from_slice(
        &std::fs::read(mbox.path().join("heartbeat.json")).expect("heartbeat.json"),
    )
    .expect("heartbeat json");
    assert_eq!(hb["interval_ms"], 1000);
    // A bad configuration is fatal and says which key.
    let bad = run(Command::new(ferry_bin())
        .args(["agent", "--no-pid1", "--once", "--root"])
        .arg(&root)
        .args(["--cmdline", "ferry.ca=md5:00"]));
    assert!(!bad.status.success());
    let t = String::from_utf8_lossy(&bad.stdout);
    assert!(
        t.contains("ferry-agent: FATAL: configuration: ferry.ca="),
        "{t}"
    );
}

/// The agent's survey line from a console.
fn survey_line(console: &str) -> String {
    console
        .lines()
        .find(|l| l.contains("ferry-agent: survey: "))
        .unwrap_or("")
        .to_string()
}

/// Boots `machine`, waits for `ready`, checks the survey line holds each of
/// `expect`, and records time and memory.
fn boot_to_ready(machine: &Machine, expect: &[&str], mgr: &Manager, mac: &str) {
    let _one = BOOTS.lock().unwrap_or_else(|e| e.into_inner());
    let log = logs().join(format!("boot-{}.log", machine.config));
    let mut vm = Vm::boot(machine, Path::new("/dev/null"), &log);
    let r = vm.wait_for("ferry-agent: ready", BOOT_TIMEOUT);
    if let Err(e) = r {
        panic!("{}: {e}", machine.config);
    }
    // Kernel start → first heartbeat: the agent's own uptime at `ready`,
    // plus the time from seeing `ready` to seeing the heartbeat at the
    // manager (polled every 250 ms, so at most ~0.5 s too much).
    let ready_seen = Instant::now();
    let ready_uptime = ready_uptime(&vm.console())
        .unwrap_or_else(|| panic!("{}: no uptime in the ready line", machine.config));
    let (hb_id, hb_seen) = mgr.wait_for_heartbeat(mac, MAX_KERNEL_TO_HEARTBEAT);
    let to_heartbeat = Duration::from_secs_f64(ready_uptime) + (hb_seen - ready_seen);
    eprintln!(
        "{}: kernel start → first heartbeat at the manager: {:.1} s (ready at {ready_uptime:.1} s)",
        machine.config,
        to_heartbeat.as_secs_f64()
    );
    assert!(
        to_heartbeat <= MAX_KERNEL_TO_HEARTBEAT,
        "{}: kernel start → first heartbeat took {to_heartbeat:?}",
        machine.config
    );
    let rss = vm.wait_for("ferry-agent: idle: rss", Duration::from_secs(60));
    let c = vm.console();
    let line = survey_line(&c);
    for want in expect {
        assert!(
            line.contains(want),
            "{}: survey line lacks {want:?}:\n{line}",
            machine.config
        );
    }
    let ready = c
        .lines()
        .find(|l| l.contains("ferry-agent: ready"))
        .unwrap_or("")
        .to_string();
    let idle = c
        .lines()
        .find(|l| l.contains("ferry-agent: idle"))
        .unwrap_or("")
        .to_string();
    eprintln!(
        "{}: {:.0} s from QEMU start; {ready}; {idle}",
        machine.config,
        vm.elapsed().as_secs_f64()
    );
    assert!(rss.is_ok(), "{}: no idle RSS line", machine.config);
    let rss_kib =
        idle_rss_kib(&idle).unwrap_or_else(|| panic!("{}: no figure in {idle:?}", machine.config));
    assert!(
        rss_kib <= MAX_IDLE_RSS_KIB,
        "{}: the idle agent's RSS is {rss_kib} KiB, over the {MAX_IDLE_RSS_KIB} KiB target: {idle}",
        machine.config
    );
    // The survey arrived through the mailbox, over HTTPS, at the manager.
    let (id, status) = mgr.wait_for_agent(mac, Duration::from_secs(120));
    assert_eq!(id, hb_id, "{}: two agents with MAC {mac}", machine.config);
    check_reported(&machine.config, &status, expect);
    let hb = mgr
        .mailbox_file(&id, "heartbeat.json")
        .unwrap_or_else(|| panic!("{}: agent {id} wrote no heartbeat", machine.config));
    assert!(hb["interval_ms"].as_u64().is_some(), "heartbeat: {hb}");
    eprintln!(
        "{}: agent {id} reported in to {}",
        machine.config,
        mgr.url()
    );
    let _ = std::fs::write(
        logs().join(format!("boot-{}.timing", machine.config)),
        format!(
            "{ready}\n{idle}\nqemu-start-to-ready {:.1} s\nkernel-to-first-heartbeat {:.1} s\n",
            vm.elapsed().as_secs_f64(),
            to_heartbeat.as_secs_f64()
        ),
    );
}

/// The agent's uptime in its `ready N s after the kernel started` line.
fn ready_uptime(console: &str) -> Option<f64> {
    console
        .lines()
        .find_map(|l| l.split("ferry-agent: ready ").nth(1))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// N of an `idle: rss N KiB …` line.
fn idle_rss_kib(line: &str) -> Option<u64> {
    line.split("idle: rss ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[test]
fn console_figures_parse() {
    let c = "[   9.100] ferry-agent: survey: …\n\
             [   9.412] ferry-agent: ready 9.4 s after the kernel started\n";
    assert_eq!(ready_uptime(c), Some(9.4));
    assert_eq!(ready_uptime("ferry-agent: FATAL: no disks"), None);
    assert_eq!(
        idle_rss_kib(
            "[  12.0] ferry-agent: idle: rss 11392 KiB (anon 1716 KiB, file 9676 KiB) after 2 s"
        ),
        Some(11392)
    );
}

/// Checks that the status the agent wrote to its mailbox holds the VM's
/// PCI ids (`vvvv:dddd` in `expect`) and disks (`name SIZE …` in `expect`).
fn check_reported(config: &str, status: &serde_json::Value, expect: &[&str]) {
    let survey = &status["survey"];
    let pci = ferry_tests::survey_pci_ids(survey);
    let disks: Vec<&str> = survey["disks"]
        .as_array()
        .map(|a| a.iter().filter_map(|d| d["name"].as_str()).collect())
        .unwrap_or_default();
    for want in expect {
        let is_pci = want.len() == 9 && want.as_bytes()[4] == b':';
        if is_pci {
            assert!(
                pci.iter().any(|p| p == want),
                "{config}: mailbox survey lacks PCI {want}: {pci:?}"
            );
        } else if want.contains(" GiB") {
            let name = want.split_whitespace().next().unwrap_or("");
            assert!(
                disks.contains(&name),
                "{config}: mailbox survey lacks disk {name}: {disks:?}"
            );
        }
    }
}

/// An ISO (BIOS + UEFI) whose agent reports to `mgr`.
fn iso_for(mgr: &Manager, name: &str) -> PathBuf {
    let m = media();
    let iso = m.dir.join(format!("{name}.iso"));
    ok(boot_cmd()
        .arg("iso")
        .arg("--output")
        .arg(&iso)
        .arg("--initrd")
        .arg(&m.initrd)
        .args(["--cmdline", &format!("{CMDLINE} {}", mgr.guest_cmdline())]));
    iso
}

fn disk(name: &str, mib: u64) -> PathBuf {
    let p = media().dir.join(name);
    let f = std::fs::File::create(&p).expect("disk");
    f.set_len(mib * MIB).expect("size");
    p
}

#[test]
fn iso_boots_under_seabios_and_surveys_the_vm() {
    if media_for("iso_boots_under_seabios_and_surveys_the_vm").is_none() {
        return;
    }
    let mgr = Manager::start();
    let iso = iso_for(&mgr, "bios");
    let d = disk("bios.img", 2048);
    let drive = format!("file={},format=raw,if=none,id=d0", d.display());
    let cd = format!(
        "file={},format=raw,media=cdrom,if=none,id=cd0",
        iso.display()
    );
    let machine = Machine::from_args(
        "iso-bios",
        &[
            "-machine",
            "pc",
            "-m",
            "1024",
            "-smp",
            "2",
            "-drive",
            &drive,
            "-device",
            "virtio-blk-pci,drive=d0,serial=FERRYBIOS01",
            "-drive",
            &cd,
            "-device",
            "ide-cd,drive=cd0",
            "-boot",
            "d",
            "-nic",
            "user,model=e1000,mac=52:54:00:12:34:61",
        ],
    );
    // i440FX host bridge, PIIX3, e1000, virtio-blk; the disk and the NIC.
    boot_to_ready(
        &machine,
        &[
            "8086:1237",
            "8086:7000",
            "8086:100e",
            "1af4:1001",
            "vda 2.0 GiB virtio_blk",
            "serial=FERRYBIOS01",
            "52:54:00:12:34:61 e1000",
        ],
        &mgr,
        "52:54:00:12:34:61",
    );
}

#[test]
fn iso_boots_under_ovmf_and_surveys_the_vm() {
    if media_for("iso_boots_under_ovmf_and_surveys_the_vm").is_none() {
        return;
    }
    let mgr = Manager::start();
    let iso = iso_for(&mgr, "uefi");
    let d = disk("uefi.img", 1024);
    let drive = format!("file={},format=raw,if=none,id=d0", d.display());
    let cd = format!(
        "file={},format=raw,media=cdrom,if=none,id=cd0",
        iso.display()
    );
    let machine = Machine::from_args(
        "iso-uefi",
        &[
            "-machine",
            "q35",
            "-m",
            "1024",
            "-smp",
            "2",
            "-drive",
            "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE.fd",
            "-drive",
            "if=pflash,format=raw,unit=1,file=@OVMF_VARS@",
            "-drive",
            &drive,
            "-device",
            "nvme,drive=d0,serial=FERRYUEFI01",
            "-drive",
            &cd,
            "-device",
            "ide-cd,drive=cd0,bootindex=0",
            "-nic",
            "user,model=virtio-net-pci,mac=52:54:00:12:34:62",
        ],
    );
    // Q35 host bridge, NVMe, virtio-net.
    boot_to_ready(
        &machine,
        &[
            "8086:29c0",
            "1b36:0010",
            "1af4:1000",
            "nvme0n1 1.0 GiB nvme",
            "serial=FERRYUEFI01",
            "52:54:00:12:34:62 virtio_net",
        ],
        &mgr,
        "52:54:00:12:34:62",
    );
}

#[test]
fn pxe_boots_through_qemu_tftp_and_ipxe() {
    if media_for("pxe_boots_through_qemu_tftp_and_ipxe").is_none() {
        return;
    }
    let mgr = Manager::start();
    let pxe = media().dir.join("pxe-mgr");
    ok(boot_cmd()
        .arg("pxe")
        .arg("--output")
        .arg(&pxe)
        .arg("--initrd")
        .arg(&media().initrd)
        .args(["--cmdline", &format!("{CMDLINE} {}", mgr.guest_cmdline())]));
    let d = disk("pxe.img", 1536);
    let drive = format!("file={},format=raw,if=none,id=d0", d.display());
    let net = format!("user,id=n0,tftp={},bootfile=boot.ipxe", pxe.display());
    let machine = Machine::from_args(
        "pxe",
        &[
            "-machine",
            "q35",
            "-m",
            "1024",
            "-smp",
            "2",
            "-drive",
            &drive,
            "-device",
            "ide-hd,drive=d0,bus=ide.0,serial=FERRYPXE01",
            "-netdev",
            &net,
            "-device",
            "e1000,netdev=n0,mac=52:54:00:12:34:63",
            "-boot",
            "n",
        ],
    );
    // Q35's ICH9 AHCI holds the disk (ahci + sd_mod loaded by coldplug).
    boot_to_ready(
        &machine,
        &[
            "8086:29c0",
            "8086:2922",
            "8086:100e",
            "sda 1.5 GiB",
            "ahci",
            "52:54:00:12:34:63 e1000",
        ],
        &mgr,
        "52:54:00:12:34:63",
    );
}

/// A PC (i440FX, e1000) booting the media's kernel with `initrd`
/// directly (`-kernel`), the console on the serial line, the agent's
/// command line `append`, and `extra` QEMU arguments.
fn direct_boot(name: &str, initrd: &Path, append: &str, extra: &[&str]) -> Machine {
    let m = media();
    let (kernel, initrd) = (m.kernel.display().to_string(), initrd.display().to_string());
    let append = format!("console=ttyS0,115200n8 printk.time=1 quiet loglevel=4 {append}");
    let mut args = vec![
        "-machine",
        "pc",
        "-m",
        "1024",
        "-smp",
        "2",
        "-kernel",
        &kernel,
        "-initrd",
        &initrd,
        "-append",
        &append,
        "-nic",
        "user,model=e1000",
    ];
    args.extend_from_slice(extra);
    Machine::from_args(name, &args)
}

#[test]
fn ramdisk_without_the_storage_driver_fails_visibly() {
    let Some(m) = media_for("ramdisk_without_the_storage_driver_fails_visibly") else {
        return;
    };
    let d = disk("nodrv.img", 1024);
    let drive = format!("file={},format=raw,if=none,id=d0", d.display());
    let machine = direct_boot(
        "no-virtio-blk",
        &m.initrd_no_virtio_blk,
        CMDLINE,
        &["-drive", &drive, "-device", "virtio-blk-pci,drive=d0"],
    );
    let _one = BOOTS.lock().unwrap_or_else(|e| e.into_inner());
    let log = logs().join("boot-no-virtio-blk.log");
    let mut vm = Vm::boot(&machine, Path::new("/dev/null"), &log);
    let fatal = vm
        .wait_for("ferry-agent: FATAL: no disks", BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let c = vm.console();
    assert!(
        c.contains("storage controllers without a driver in this ramdisk")
            && c.contains("1af4:1001"),
        "the FATAL line does not name the virtio disk controller"
    );
    assert!(!c.contains("ferry-agent: ready"));
    let shell = vm
        .wait_for_after(
            "rescue shell on the console",
            fatal,
            Duration::from_secs(60),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    std::thread::sleep(Duration::from_secs(2));
    vm.type_line("echo RESCUE$((6*7))");
    vm.wait_for_after("RESCUE42", shell, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("the rescue shell does not answer: {e}"));
    eprintln!(
        "no-virtio-blk: FATAL and a working rescue shell after {:.0} s",
        vm.elapsed().as_secs_f64()
    );
}

/// A swapped agent (`ferry.return_after`, which `ferry boot swap` sets)
/// that cannot reach its server keeps trying, then reboots, so that the
/// machine returns to its installed OS (here QEMU's `-no-reboot` makes
/// the reboot an exit).
#[test]
fn an_agent_that_cannot_reach_its_server_returns_to_the_installed_os() {
    let Some(m) = media_for("an_agent_that_cannot_reach_its_server_returns_to_the_installed_os")
    else {
        return;
    };
    // Nothing listens on port 9 of QEMU's host address.
    let append = format!(
        "ferry.server=https://10.0.2.2:9 ferry.token=enrol-me ferry.ca=sha256:{} \
         ferry.return_after=45",
        "ab".repeat(32)
    );
    let machine = direct_boot("return-after", &m.initrd, &append, &[]);
    let _one = BOOTS.lock().unwrap_or_else(|e| e.into_inner());
    let mut vm = Vm::boot(
        &machine,
        Path::new("/dev/null"),
        &logs().join("boot-return-after.log"),
    );
    let retry = vm
        .wait_for("trying again in 10 s", BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("the agent did not retry its server: {e}"));
    let back = vm
        .wait_for_after(
            "returning to the installed OS",
            retry,
            Duration::from_secs(120),
        )
        .unwrap_or_else(|e| panic!("the agent did not give up: {e}"));
    vm.wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("the agent did not reboot: {e}"));
    let c = vm.console();
    assert!(!c.contains("ferry-agent: ready"), "it came up after all");
    assert!(
        c[..back].contains("FATAL: mailbox https://10.0.2.2:9"),
        "the FATAL line does not name the server"
    );
    assert!(
        !c.contains("needs its CA") && !c.contains("no token"),
        "refused for its configuration, not for the server"
    );
    eprintln!(
        "return-after: rebooted {:.0} s after power-on",
        vm.elapsed().as_secs_f64()
    );
}
