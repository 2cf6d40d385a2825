//! `ferry boot swap` on a running Debian server in QEMU (TCG): the machine
//! moves onto the real agent, is captured offline, and comes back.
//!
//! One VM, five boots:
//!
//! 1. the Debian fixture (a qcow2 overlay on the cached `debian-ide.img`,
//!    never written) boots to `login:`; a marker file is written, then
//!    `ferry boot swap --kexec --yes` (the static agent binary, run inside
//!    the guest) loads the agent's kernel and initramfs with the agent's
//!    command line (`ferry.server=https://10.0.2.2:PORT …`) and kexecs
//!    through `systemctl kexec` (file systems unmounted cleanly);
//! 2. the agent, with no firmware or GRUB in between, enrols with the
//!    test's `ferry serve` and reports its survey through the mailbox; an
//!    operator job captures the disk the VM was running from (found by
//!    its serial in the survey: the kernel's sdX order varies), now
//!    unmounted — into the manager's library. The image must verify,
//!    deploy to a clean ext4 (`e2fsck -fn`) holding the marker. Then a
//!    `reboot` job sends the machine back through the firmware;
//! 3. GRUB boots Debian again to `login:` (the marker is still there);
//!    `ferry boot swap --grub` adds a one-shot GRUB entry for the same
//!    agent kernel and initramfs, and the machine reboots;
//! 4. GRUB's one-shot entry boots the agent, which enrols again (a new
//!    mailbox: the ramdisk keeps nothing) and sends its heartbeat; a
//!    `reboot` job sends the machine back;
//! 5. GRUB, its one-shot entry spent, boots Debian to `login:` with
//!    `next_entry` cleared.
//!
//! Printed figures: kexec (the agent kernel's first console line) → the
//! agent's first heartbeat at the manager; the capture's throughput in the
//! guest; each boot's time.
//!
//! How files reach the guest: a second small disk (ext4, label `payload`)
//! holds the static ferry and the agent's kernel and initramfs. It needs
//! no network and no server in the guest before the
//! swap, and holds what an operator would `scp`. It is a virtio disk
//! (`vda`, module loaded by udev after boot): as a second IDE disk it was
//! sometimes probed first and became `sda`, and the fixture's Debian,
//! whose fstab and GRUB name `/dev/sda1`, then failed to find its root. The agent's initramfs embeds
//! the manager's CA (`ferry boot initramfs --config`), since the image
//! library's client trusts a CA certificate, not a pinned fingerprint.
//!
//! Consoles are kept in `$FERRY_TEST_LOGS` (default
//! `/var/tmp/ferry-boot-logs`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ferry_tests::lab::{self, agent_bin, host_kernel};
use ferry_tests::manager::Manager;
use ferry_tests::qemu::{Vm, TCG_ACCEL};
use ferry_tests::{debian_ide_fixture, ferry_bin, ok, run, Loop};

/// A Debian boot to `login:` takes 40–90 s under TCG; leave room for a
/// loaded CI machine.
const BOOT_TIMEOUT: Duration = Duration::from_secs(420);
/// The ramdisk boots in seconds, but the kernel still probes under TCG.
const RAMDISK_TIMEOUT: Duration = Duration::from_secs(180);
/// kexec → first heartbeat took 31–77 s under TCG on a 2-core machine at
/// load 8–12 (kernel, coldplug, DHCP, enrolment), before the TCG cache
/// below was bounded; the figure is printed, and this bound only catches
/// a hang.
const MAX_KEXEC_TO_HEARTBEAT: Duration = Duration::from_secs(120);
/// The fixture's ~0.8 GB of allocated blocks at a few MB/s under TCG.
const CAPTURE_TIMEOUT: Duration = Duration::from_secs(1200);
/// The guest's NIC, by which the agent is found at the manager.
const MAC: &str = "52:54:00:12:34:71";
/// Heartbeat interval asked of the agent, so the first one is seen soon.
const HEARTBEAT: &str = "ferry.heartbeat=2";

/// Why this test cannot run here, if it cannot: the lab's prerequisites
/// and the tools that build and check the guest's disks.
fn missing_prerequisite() -> Option<String> {
    lab::missing_prerequisite_with(&[
        ("qemu-img", "qemu-utils"),
        ("mkfs.ext4", "e2fsprogs"),
        ("e2fsck", "e2fsprogs"),
        ("debugfs", "e2fsprogs"),
        ("partx", "util-linux"),
    ])
}

/// The agent's initramfs, with the manager's CA embedded.
fn agent_initramfs(dir: &Path, mgr: &Manager) -> PathBuf {
    let ca = std::fs::read_to_string(mgr.file("ca.pem")).expect("the manager's ca.pem");
    let config = dir.join("agent.json");
    std::fs::write(&config, serde_json::json!({ "ca_pem": ca }).to_string())
        .expect("writing agent.json");
    let img = dir.join("agent-initrd.img");
    ok(Command::new(ferry_bin())
        .args(["boot", "initramfs", "--output"])
        .arg(&img)
        .arg("--agent")
        .arg(agent_bin())
        .arg("--config")
        .arg(&config));
    img
}

/// A small ext4 disk holding the static ferry, the agent's kernel and
/// initramfs.
fn payload_disk(dir: &Path, agent_initrd: &Path) -> PathBuf {
    let files = dir.join("payload");
    let _ = std::fs::remove_dir_all(&files);
    std::fs::create_dir_all(&files).expect("mkdir");
    let kernel = host_kernel().expect("checked in missing_prerequisite");
    for (from, to) in [
        (agent_bin(), "ferry"),
        (kernel, "vmlinuz"),
        (agent_initrd.to_path_buf(), "agent-initrd.img"),
    ] {
        std::fs::copy(&from, files.join(to))
            .unwrap_or_else(|e| panic!("copying {}: {e}", from.display()));
    }
    let img = dir.join("payload.img");
    let _ = std::fs::remove_file(&img);
    ok(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "payload", "-d"])
        .arg(&files)
        .arg(&img)
        .arg("192M"));
    img
}

fn logs() -> PathBuf {
    let d = PathBuf::from(
        std::env::var("FERRY_TEST_LOGS").unwrap_or_else(|_| "/var/tmp/ferry-boot-logs".into()),
    );
    std::fs::create_dir_all(&d).expect("log dir");
    d
}

fn must<T>(r: Result<T, String>, what: &str) -> T {
    r.unwrap_or_else(|e| panic!("{what}:\n{e}"))
}

/// Types a command in the logged-in shell and returns what it printed.
fn shell(vm: &mut Vm, command: &str) -> String {
    let t = Duration::from_secs(120);
    let start = vm.console().len();
    vm.type_line(&format!("echo FERRY''BEGIN; {command}; echo FERRY''END"));
    let begin = must(vm.wait_for_after("FERRYBEGIN", start, t), command);
    let end = must(vm.wait_for_after("FERRYEND", begin, t), command);
    vm.console()[begin..end - "FERRYEND".len()]
        .trim()
        .to_string()
}

/// Mounts the payload disk on /mnt (retried: late in boot, udev may still
/// hold the disk for a moment).
fn mount_payload(vm: &mut Vm) {
    let out = shell(
        vm,
        "for i in 1 2 3 4 5 6; do mount /dev/vda /mnt && break; sleep 2; done; \
         test -x /mnt/ferry && echo payload-ok",
    );
    assert!(out.contains("payload-ok"), "{out}");
}

/// Verifies `image` in the manager's library, deploys it into a sparse
/// file and checks its first partition: a clean ext4 (`e2fsck -fn`) whose
/// /root/ferry-swap-marker holds `marker`.
fn check_captured_disk(mgr: &Manager, work: &Path, image: &str, marker: &str) {
    let lib = mgr.library();
    let verify = run(Command::new(ferry_bin())
        .arg("--library")
        .arg(&lib)
        .args(["image", "verify", image]));
    assert!(
        verify.status.success(),
        "ferry image verify {image}:\n{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    // A server image is deployed, not restored: onto a loop device over a
    // sparse file the size of the VM's disk.
    let disk = work.join("deployed.img");
    let _ = std::fs::remove_file(&disk);
    ok(Command::new("truncate").args(["-s", "2G"]).arg(&disk));
    let target = Loop::attach(&disk, false, None);
    ok(Command::new(ferry_bin())
        .arg("--library")
        .arg(&lib)
        .args(["deploy", image, "--json", "--target"])
        .arg(&target.0));
    drop(target);
    let part = ok(Command::new("partx")
        .args(["-g", "-o", "START,SECTORS", "-n", "1"])
        .arg(&disk));
    let nums: Vec<u64> = part
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    let [start, sectors] = nums[..] else {
        panic!("partx found no first partition in the deployed disk: {part:?}")
    };
    let dev = Loop::attach(&disk, true, Some((start * 512, sectors * 512)));
    let fsck = run(Command::new("e2fsck").arg("-fn").arg(&dev.0));
    assert!(
        fsck.status.success(),
        "e2fsck -fn on the captured root:\n{}{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
    let cat = ok(Command::new("debugfs")
        .args(["-R", "cat /root/ferry-swap-marker"])
        .arg(&dev.0));
    assert_eq!(cat.trim(), marker, "the captured disk lacks the marker");
    drop(dev);
    let _ = std::fs::remove_file(&disk);
}

#[test]
fn swap_to_the_agent_capture_offline_and_boot_back() {
    const NAME: &str = "swap_to_the_agent_capture_offline_and_boot_back";
    if let Some(why) = missing_prerequisite() {
        ferry_tests::skip(NAME, &why);
        return;
    }
    // debian-ide.img: debian.img with an initramfs made on this very
    // hardware (i440fx, IDE, e1000), the one the boot tests know boots.
    let fixture = debian_ide_fixture();
    let work = PathBuf::from(
        std::env::var("FERRY_TEST_WORK").unwrap_or_else(|_| "/var/tmp/ferry-swap-tests".into()),
    );
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("work dir");
    let overlay = work.join("overlay.qcow2");
    ok(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(fixture.join("debian-ide.img"))
        .arg(&overlay));
    let mgr = Manager::start();
    let agent_initrd = agent_initramfs(&work, &mgr);
    let payload = payload_disk(&work, &agent_initrd);
    // -cpu max: MTTCG runs the two vCPUs on two host threads either way;
    // max gives the guest SSE4.1/AVX2 paths for blake3 and LZ4.
    // $FERRY_TEST_CPU overrides it, to compare.
    let cpu = std::env::var("FERRY_TEST_CPU").unwrap_or_else(|_| "max".into());
    // TCG_ACCEL: a bounded translation cache, or the agent kernel pays
    // for the code Debian left in it.
    let args: Vec<String> = [
        TCG_ACCEL[0],
        TCG_ACCEL[1],
        "-machine",
        "pc",
        "-cpu",
        &cpu,
        "-smp",
        "2",
        "-m",
        "1024",
        "-drive",
        &format!("file={},format=qcow2,if=ide,index=0", overlay.display()),
        "-drive",
        &format!("file={},format=raw,if=virtio", payload.display()),
        "-nic",
        &format!("user,model=e1000,mac={MAC}"),
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        "stdio",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut vm = Vm::boot_args(&args, &logs().join("swap.console.log"));

    // Boot 1: Debian. A marker the capture must hold, then the swap.
    must(vm.wait_for("login:", BOOT_TIMEOUT), "Debian did not boot");
    eprintln!(
        "boot 1 (Debian): login: after {:.0} s",
        vm.elapsed().as_secs_f64()
    );
    let marker = format!("swapped-{}", std::process::id());
    let out = must(
        vm.login_and_run(
            "root",
            "ferry",
            &format!(
                "echo {marker} > /root/ferry-swap-marker; sync; \
                 cat /proc/sys/kernel/kexec_load_disabled"
            ),
        ),
        "logging in",
    );
    assert_eq!(out.lines().last().map(str::trim), Some("0"), "{out}");
    mount_payload(&mut vm);
    let at = vm.console().len();
    vm.type_line(&format!(
        "/mnt/ferry boot swap --kexec --yes --kernel /mnt/vmlinuz --initrd /mnt/agent-initrd.img \
         --cmdline 'console=ttyS0,115200 printk.time=1 {HEARTBEAT} {}'",
        mgr.guest_cmdline()
    ));

    // Boot 2: the agent, by kexec.
    let kexec = must(
        vm.wait_for_after("Linux version", at, RAMDISK_TIMEOUT),
        "kexec did not start the agent's kernel",
    );
    let kexec_at = Instant::now();
    let c = vm.console();
    assert!(
        c[at..kexec].contains("kexec into the agent"),
        "ferry boot swap did not say it kexecs:\n{}",
        &c[at..kexec]
    );
    assert!(
        !c[at..kexec].contains("GNU GRUB") && !c[at..kexec].contains("SeaBIOS"),
        "the firmware or GRUB ran: not a kexec"
    );
    let (id, heartbeat_at) = mgr.wait_for_heartbeat(MAC, RAMDISK_TIMEOUT);
    let to_heartbeat = heartbeat_at - kexec_at;
    let ready = vm
        .console()
        .lines()
        .find(|l| l.contains("ferry-agent: ready"))
        .unwrap_or("")
        .to_string();
    eprintln!(
        "boot 2 (agent via kexec): kexec → first heartbeat {:.1} s; {}",
        to_heartbeat.as_secs_f64(),
        ready.trim()
    );
    assert!(
        to_heartbeat < MAX_KEXEC_TO_HEARTBEAT,
        "kexec → first heartbeat took {to_heartbeat:?}"
    );
    let (sid, status) = mgr.wait_for_agent(MAC, Duration::from_secs(60));
    assert_eq!(sid, id);
    assert_eq!(status["state"], "idle", "{status}");
    // Disk names follow the kernel's probe order, which can differ from
    // boot to boot: like an operator, pick the disk by its serial in the
    // survey. QEMU gives IDE index 0 the serial QM00001.
    let disks = status["survey"]["disks"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let system = disks
        .iter()
        .find(|d| d["serial"] == "QM00001")
        .unwrap_or_else(|| panic!("the agent's survey lacks the disk QM00001: {disks:?}"));
    assert_eq!(system["size"], 2u64 << 30, "{system}");
    let dev = format!(
        "/dev/{}",
        system["name"].as_str().expect("a surveyed disk has a name")
    );
    // The idle agent's memory, before any job (issue 6's bound is
    // asserted by the boot tests; here it is printed).
    match vm.wait_for_after("ferry-agent: idle: rss", kexec, Duration::from_secs(120)) {
        Ok(end) => {
            let c = vm.console();
            let line_end = c[end..].find('\n').map_or(c.len(), |i| end + i);
            eprintln!(
                "agent after kexec: idle: rss{}",
                &c[end..line_end].trim_end()
            );
        }
        Err(e) => eprintln!("agent after kexec: no idle RSS line: {e}"),
    }
    // The capture, offline: the root file system is not mounted now.
    let cap = run(mgr.ferry().args([
        "capture", "--agent", &id, "--name", "swapped", "--disk", &dev,
    ]));
    assert!(
        cap.status.success(),
        "ferry capture --agent: {}",
        String::from_utf8_lossy(&cap.stderr)
    );
    let job = String::from_utf8_lossy(&cap.stdout).trim().to_string();
    let started = Instant::now();
    let j = mgr.wait_for_job(&job, CAPTURE_TIMEOUT);
    let took = started.elapsed();
    assert_eq!(
        j["state"], "finished",
        "the capture job did not finish: {j}"
    );
    // The agent's own figures: bytes read from the disk and wall time, in
    // the guest.
    let stats = &j["steps"][0]["result"]["stats"];
    let (read, secs) = (
        stats["bytes_read"].as_u64().unwrap_or(0),
        stats["seconds"].as_f64().unwrap_or(0.0),
    );
    eprintln!(
        "capture of {dev} in the guest: {:.0} MB read in {secs:.0} s = {:.1} MB/s \
         ({:.0} s from the operator's command to the job's end; {})",
        read as f64 / 1e6,
        read as f64 / 1e6 / secs.max(0.001),
        took.as_secs_f64(),
        j["steps"][0]["result"]
    );
    // The fixture's root holds ~0.8 GB; the partition table area and the
    // used blocks only, not the whole 2 GiB.
    assert!(
        (200_000_000..2_000_000_000).contains(&read) && secs > 0.0,
        "implausible capture figures: {stats}"
    );
    check_captured_disk(&mgr, &work, "swapped", &marker);

    // Back to the server's own OS, through the firmware and GRUB.
    let at = vm.console().len();
    let reboot = mgr.create_job(&id, serde_json::json!([{ "action": "reboot" }]));
    let j = mgr.wait_for_job(&reboot, Duration::from_secs(60));
    assert_eq!(j["state"], "finished", "the reboot job: {j}");
    assert_eq!(j["steps"][0]["result"]["done"], true, "{j}");

    // Boot 3: Debian again, with the marker.
    let back = must(
        vm.wait_for_after("login:", at, BOOT_TIMEOUT),
        "the old OS did not come back after the agent's reboot",
    );
    assert!(
        vm.console()[at..back].contains("GNU GRUB") || vm.console()[at..back].contains("Booting"),
        "the reboot did not go through the firmware and GRUB"
    );
    eprintln!(
        "boot 3 (Debian again): login: after {:.0} s",
        vm.elapsed().as_secs_f64()
    );
    let out = must(
        vm.login_and_run(
            "root",
            "ferry",
            "cat /root/ferry-swap-marker; cat /proc/cmdline",
        ),
        "logging in after the agent",
    );
    assert!(out.contains(&marker), "{out}");
    assert!(!out.contains("ferry.server"), "{out}");

    // The GRUB path: a one-shot entry for the agent, as an operator would
    // use where kexec is disabled.
    mount_payload(&mut vm);
    let out = shell(
        &mut vm,
        &format!(
            "/mnt/ferry boot swap --grub --kernel /mnt/vmlinuz --initrd /mnt/agent-initrd.img \
             --cmdline 'console=ttyS0,115200 printk.time=1 {HEARTBEAT} {}' </dev/null 2>&1; \
             echo rc=$?; grub-editenv list; ls /boot/ferry; \
             grep -c \"menuentry 'ferry agent (one-shot)'\" /boot/grub/grub.cfg",
            mgr.guest_cmdline()
        ),
    );
    eprintln!("{out}");
    assert!(
        out.contains("rc=0"),
        "ferry boot swap --grub failed:\n{out}"
    );
    assert!(out.contains("not rebooting without --yes"), "{out}");
    assert!(
        out.contains("next_entry=ferry agent (one-shot)"),
        "grubenv has no one-shot entry:\n{out}"
    );
    let at = vm.console().len();
    vm.type_line("umount /mnt; reboot");

    // Boot 4: GRUB's one-shot entry, the agent (a new mailbox: the ramdisk
    // keeps nothing between boots).
    let started = must(
        vm.wait_for_after("ferry-agent: ready", at, BOOT_TIMEOUT),
        "the one-shot entry did not boot the agent",
    );
    assert!(
        vm.console()[at..started].contains("GNU GRUB")
            || vm.console()[at..started].contains("Booting"),
        "the agent did not come through GRUB"
    );
    let since = Instant::now();
    let grub_agent = loop {
        let fresh: Vec<String> = mgr
            .agents_with_mac(MAC)
            .into_iter()
            .filter(|a| *a != id && mgr.mailbox_file(a, "heartbeat.json").is_some())
            .collect();
        if let Some(a) = fresh.into_iter().next() {
            break a;
        }
        assert!(
            since.elapsed() < RAMDISK_TIMEOUT,
            "the agent booted by GRUB sent no heartbeat within {RAMDISK_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    eprintln!(
        "boot 4 (agent via GRUB's one-shot entry): heartbeat from {grub_agent} at {:.0} s",
        vm.elapsed().as_secs_f64()
    );
    // Its survey: this VM's disk, as after the kexec.
    let survey = loop {
        if let Some(st) = mgr.mailbox_file(&grub_agent, "status.json") {
            if st.get("survey").is_some() {
                break st["survey"].clone();
            }
        }
        assert!(
            since.elapsed() < RAMDISK_TIMEOUT,
            "the agent booted by GRUB reported no survey"
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    assert!(
        survey["disks"].as_array().is_some_and(|d| d
            .iter()
            .any(|d| d["serial"] == "QM00001" && d["size"] == 2u64 << 30)),
        "the GRUB-booted agent's survey lacks the VM's disk: {survey}"
    );
    // And its PCI devices: the e1000 NIC and the payload's virtio disk.
    let pci = ferry_tests::survey_pci_ids(&survey);
    for want in ["8086:100e", "1af4:1001"] {
        assert!(
            pci.iter().any(|p| p == want),
            "the GRUB-booted agent's survey lacks PCI {want}: {pci:?}"
        );
    }
    let at = vm.console().len();
    let reboot = mgr.create_job(&grub_agent, serde_json::json!([{ "action": "reboot" }]));
    let j = mgr.wait_for_job(&reboot, Duration::from_secs(60));
    assert_eq!(j["state"], "finished", "the reboot job: {j}");
    let swapped = at;

    // Boot 5: Debian by itself, the one-shot entry spent.
    must(
        vm.wait_for_after("login:", swapped, BOOT_TIMEOUT),
        "the old OS did not come back after the one-shot boot",
    );
    eprintln!(
        "boot 5 (Debian again): login: after {:.0} s",
        vm.elapsed().as_secs_f64()
    );
    let out = must(
        vm.login_and_run("root", "ferry", "grub-editenv list; cat /proc/cmdline"),
        "logging in again",
    );
    assert!(
        !out.contains("next_entry=ferry"),
        "next_entry not cleared:\n{out}"
    );
    assert!(!out.contains("ferry.server"), "{out}");
}
