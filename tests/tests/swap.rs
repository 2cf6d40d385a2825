//! `ferry boot swap` on a running Debian server in QEMU (TCG): the machine
//! moves onto a ramdisk and comes back.
//!
//! One VM, four boots: (1) the Debian fixture (a qcow2 overlay on the
//! cached `debian-ide.img`, never written) boots to `login:`; `ferry boot swap
//! --grub` adds the one-shot entry (checked in grubenv), then `reboot`;
//! (2) GRUB boots the test ramdisk, which prints `SWAPPED-IN` and reboots;
//! (3) GRUB, its one-shot entry spent, boots Debian again to `login:`
//! (next_entry cleared); `ferry boot swap --kexec --yes` loads the ramdisk
//! with kexec_file_load and kexecs; (4) the ramdisk prints `SWAPPED-IN`
//! without any firmware or GRUB in between.
//!
//! The ramdisk is a test initramfs (busybox as /init) until the agent's
//! own exists: the mechanics are what this proves. It runs the Debian
//! kernel the guest already has. The ferry binary and the initramfs reach
//! the guest on a second small disk. Consoles are kept in
//! `$FERRY_TEST_LOGS` (default `/var/tmp/ferry-boot-logs`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ferry_tests::qemu::Vm;
use ferry_tests::{debian_ide_fixture, ferry_bin, is_root, ok, require};

/// A Debian boot to `login:` takes 40–90 s under TCG; leave room for a
/// loaded CI machine.
const BOOT_TIMEOUT: Duration = Duration::from_secs(420);
/// The ramdisk boots in seconds, but the kernel still probes under TCG.
const RAMDISK_TIMEOUT: Duration = Duration::from_secs(180);

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The test ramdisk: busybox as /init, printing `SWAPPED-IN` and its
/// command line; it reboots when the command line says `ferry.reboot`.
fn test_initramfs(dir: &Path) -> PathBuf {
    let tree = dir.join("initramfs");
    let _ = std::fs::remove_dir_all(&tree);
    std::fs::create_dir_all(tree.join("bin")).expect("mkdir");
    std::fs::create_dir_all(tree.join("dev")).expect("mkdir");
    std::fs::create_dir_all(tree.join("proc")).expect("mkdir");
    std::fs::copy("/bin/busybox", tree.join("bin/busybox")).expect("copying /bin/busybox");
    std::fs::write(
        tree.join("init"),
        "#!/bin/busybox sh\n\
         /bin/busybox mount -t proc proc /proc\n\
         echo \"SWAPPED-IN: $(/bin/busybox cat /proc/cmdline)\"\n\
         if /bin/busybox grep -q ferry.reboot /proc/cmdline; then\n\
         \x20 /bin/busybox sleep 1; /bin/busybox reboot -f\n\
         fi\n\
         while :; do /bin/busybox sleep 3600; done\n",
    )
    .expect("writing init");
    let img = dir.join("initrd.img");
    ok(Command::new("sh").arg("-c").arg(format!(
        "set -e; cd {t}; chmod 755 init; mknod -m 600 dev/console c 5 1; \
         find . | cpio -o -H newc --quiet | gzip -1 > {img}",
        t = tree.display(),
        img = img.display()
    )));
    img
}

/// A small ext4 disk holding the ferry binary and the test initramfs.
fn payload_disk(dir: &Path, initrd: &Path) -> PathBuf {
    let files = dir.join("payload");
    let _ = std::fs::remove_dir_all(&files);
    std::fs::create_dir_all(&files).expect("mkdir");
    std::fs::copy(ferry_bin(), files.join("ferry")).expect("copying ferry");
    std::fs::copy(initrd, files.join("initrd.img")).expect("copying the initramfs");
    let img = dir.join("payload.img");
    let _ = std::fs::remove_file(&img);
    ok(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "payload", "-d"])
        .arg(&files)
        .arg(&img)
        .arg("128M"));
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

#[test]
fn swap_by_grub_once_then_by_kexec() {
    require!(is_root(), "swap_by_grub_once_then_by_kexec", "needs root");
    for tool in ["qemu-system-x86_64", "qemu-img", "cpio", "mkfs.ext4"] {
        require!(
            have(tool),
            "swap_by_grub_once_then_by_kexec",
            format!("{tool} is not installed")
        );
    }
    require!(
        Path::new("/bin/busybox").is_file(),
        "swap_by_grub_once_then_by_kexec",
        "/bin/busybox is missing (package busybox-static)"
    );
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
    let initrd = test_initramfs(&work);
    let payload = payload_disk(&work, &initrd);
    let args: Vec<String> = [
        "-machine",
        "pc",
        "-smp",
        "2",
        "-m",
        "1024",
        "-drive",
        &format!("file={},format=qcow2,if=ide,index=0", overlay.display()),
        "-drive",
        &format!("file={},format=raw,if=ide,index=1", payload.display()),
        "-nic",
        "user,model=e1000",
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

    // Boot 1: Debian. The one-shot GRUB entry, not yet rebooting.
    must(vm.wait_for("login:", BOOT_TIMEOUT), "Debian did not boot");
    eprintln!(
        "boot 1 (Debian): login: after {:.0} s",
        vm.elapsed().as_secs_f64()
    );
    let out = must(
        vm.login_and_run(
            "root",
            "ferry",
            "mount /dev/sdb /mnt && /mnt/ferry boot swap --grub --kernel $(ls /boot/vmlinuz-* | tail -n 1) \
             --initrd /mnt/initrd.img --cmdline 'console=ttyS0,115200 ferry.reboot' </dev/null 2>&1; \
             echo rc=$?; grub-editenv list; ls /boot/ferry; \
             grep -c \"menuentry 'ferry agent (one-shot)'\" /boot/grub/grub.cfg",
        ),
        "logging in",
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
    assert!(
        out.contains("initrd.img") && out.contains("vmlinuz"),
        "{out}"
    );
    let at = vm.console().len();
    vm.type_line("umount /mnt; reboot");

    // Boot 2: GRUB's one-shot entry, the ramdisk.
    let swapped = must(
        vm.wait_for_after("SWAPPED-IN:", at, BOOT_TIMEOUT),
        "the one-shot entry did not boot the ramdisk",
    );
    let line_end = vm.console()[swapped..]
        .find('\n')
        .map_or(vm.console().len(), |i| swapped + i);
    let cmdline = vm.console()[swapped..line_end].to_string();
    assert!(cmdline.contains("ferry.reboot"), "{cmdline}");
    eprintln!(
        "boot 2 (ramdisk via GRUB): {:.0} s",
        vm.elapsed().as_secs_f64()
    );

    // Boot 3: back to Debian by itself, the one-shot entry spent.
    must(
        vm.wait_for_after("login:", swapped, BOOT_TIMEOUT),
        "the old OS did not come back after the one-shot boot",
    );
    eprintln!(
        "boot 3 (Debian again): login: after {:.0} s",
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
    assert!(!out.contains("ferry.reboot"), "{out}");

    // Boot 4: kexec, no firmware and no GRUB in between.
    let out = shell(&mut vm, "cat /proc/sys/kernel/kexec_load_disabled");
    assert_eq!(out.lines().last().map(str::trim), Some("0"), "{out}");
    // Retried: late in boot, udev may still hold the disk for a moment.
    let out = shell(
        &mut vm,
        "for i in 1 2 3 4 5 6; do mount /dev/sdb /mnt && break; sleep 2; done; test -x /mnt/ferry && echo payload-ok",
    );
    assert!(out.contains("payload-ok"), "{out}");
    let at = vm.console().len();
    vm.type_line(
        "/mnt/ferry boot swap --kexec --yes --kernel $(ls /boot/vmlinuz-* | tail -n 1) --initrd /mnt/initrd.img \
         --cmdline 'console=ttyS0,115200 ferry.kexec'",
    );
    let swapped = must(
        vm.wait_for_after("SWAPPED-IN:", at, RAMDISK_TIMEOUT),
        "kexec did not start the ramdisk",
    );
    let c = vm.console();
    let line_end = c[swapped..].find('\n').map_or(c.len(), |i| swapped + i);
    assert!(
        c[swapped..line_end].contains("ferry.kexec"),
        "{}",
        &c[swapped..line_end]
    );
    assert!(
        !c[at..swapped].contains("GNU GRUB"),
        "the firmware or GRUB ran: not a kexec"
    );
    eprintln!(
        "boot 4 (ramdisk via kexec): {:.0} s",
        vm.elapsed().as_secs_f64()
    );
}
