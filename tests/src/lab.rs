//! The migration lab: a `ferry serve` with its image library, the agent's
//! boot media (ISO and PXE directory) pointing at it, and virtual machines
//! described by their hardware, booted from the ISO, the network or their
//! disk. The end-to-end tests and `./run demo` both drive it, through the
//! operator's CLI (`ferry capture --agent`, `ferry deploy --agent`,
//! `ferry job --follow`), as a sysadmin would.
//!
//! Machines keep QEMU running across guest reboots (no `-no-reboot`), so a
//! deploy that ends in a reboot comes back up from the deployed disk: the
//! disk is first in the boot order, the network second, and a blank disk
//! falls through to PXE, as on real servers.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::manager::Manager;
use crate::qemu::Vm;
use crate::{ferry_bin, ok};

/// Heartbeats every 2 s, so tests see agents come and go quickly.
const AGENT_CMDLINE: &str = "ferry.heartbeat=2";
/// An agent comes up in ~10 s of kernel time under TCG; firmware, PXE and
/// the ramdisk's load come first. Room for a loaded CI machine.
const AGENT_TIMEOUT: Duration = Duration::from_secs(300);
/// A Debian boot to `login:` takes 40–90 s under TCG.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(600);
/// The first-boot check waits for the network and for systemd to settle.
const REPORT_TIMEOUT: Duration = Duration::from_secs(300);

/// The static (musl) ferry that the ramdisk runs: `$FERRY_AGENT_BIN`, else
/// the musl build in the workspace's target directory
/// (`boot/build-agent.sh`).
pub fn agent_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("FERRY_AGENT_BIN") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/x86_64-unknown-linux-musl/release/ferry")
}

fn has_command(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The newest kernel in /boot (Debian's linux-image-amd64), which `ferry
/// boot` uses by default.
pub fn host_kernel() -> Option<PathBuf> {
    std::fs::read_dir("/boot")
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .max()
}

/// Why the lab cannot run here, if it cannot: root, QEMU, OVMF, iPXE, the
/// tools the boot media need, a kernel in /boot and the static agent.
pub fn missing_prerequisite() -> Option<String> {
    missing_prerequisite_with(&[])
}

/// As [`missing_prerequisite`], also checking `tools` (command, package).
pub fn missing_prerequisite_with(tools: &[(&str, &str)]) -> Option<String> {
    if !crate::is_root() {
        return Some("needs root".into());
    }
    let lab_tools = [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("xorriso", "xorriso"),
        ("grub-mkimage", "grub-common"),
        ("mcopy", "mtools"),
        ("mkfs.fat", "dosfstools"),
        ("zstd", "zstd"),
        ("cpio", "cpio"),
        ("curl", "curl"),
    ];
    for &(tool, pkg) in lab_tools.iter().chain(tools) {
        if !has_command(tool) {
            return Some(format!("{tool} is not installed (package {pkg})"));
        }
    }
    for (p, pkg) in [
        ("/bin/busybox", "busybox-static"),
        ("/usr/lib/grub/i386-pc/boot_hybrid.img", "grub-pc-bin"),
        ("/usr/lib/grub/x86_64-efi/linux.mod", "grub-efi-amd64-bin"),
        ("/usr/share/OVMF/OVMF_CODE.fd", "ovmf"),
        ("/usr/lib/ipxe/qemu/efi-e1000.rom", "ipxe-qemu"),
    ] {
        if !Path::new(p).exists() {
            return Some(format!("{p} is missing (package {pkg})"));
        }
    }
    if !agent_bin().is_file() {
        return Some(format!(
            "no static agent at {} (build it with boot/build-agent.sh)",
            agent_bin().display()
        ));
    }
    if host_kernel().is_none() {
        return Some("no /boot/vmlinuz-* (package linux-image-amd64)".into());
    }
    None
}

/// How a machine's disk is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskBus {
    /// PIIX IDE (`-machine pc`): `/dev/sda`.
    Ide,
    /// virtio-blk: `/dev/vda`.
    Virtio,
    /// NVMe: `/dev/nvme0n1`.
    Nvme,
    /// ICH9 AHCI (`-machine q35`): `/dev/sda`.
    Sata,
}

impl DiskBus {
    /// The disk's name inside the machine.
    pub fn guest_path(self) -> &'static str {
        match self {
            DiskBus::Ide | DiskBus::Sata => "/dev/sda",
            DiskBus::Virtio => "/dev/vda",
            DiskBus::Nvme => "/dev/nvme0n1",
        }
    }
}

/// Where a machine boots from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootFrom {
    /// The agent ISO first, then the disk.
    Iso,
    /// The disk first, then PXE: a blank disk falls through to the agent,
    /// and after a deploy the machine reboots into the deployed OS.
    DiskThenPxe,
    /// PXE first (a one-off "boot from the network" of a machine whose
    /// disk already boots), then the disk.
    Pxe,
}

/// A virtual machine's hardware.
#[derive(Clone, Debug)]
pub struct Hardware {
    /// A short name, for logs and files.
    pub name: String,
    /// UEFI (OVMF) rather than BIOS (SeaBIOS).
    pub uefi: bool,
    /// The QEMU machine type (`pc`: i440FX and PIIX; `q35`: ICH9).
    pub machine: &'static str,
    /// How the disk is attached.
    pub bus: DiskBus,
    /// The NIC's QEMU model (`e1000`, `e1000e`, `virtio-net-pci`,
    /// `rtl8139`).
    pub nic: &'static str,
    /// Its MAC address: how the lab finds the machine's agent.
    pub mac: String,
    /// Memory in MiB.
    pub memory_mib: u32,
}

impl Hardware {
    /// QEMU arguments for this machine with `disk` (raw), booting `from`.
    fn qemu_args(
        &self,
        disk: &Path,
        from: BootFrom,
        lab: &Lab,
        vars: Option<&Path>,
    ) -> Vec<String> {
        let mut a: Vec<String> = [
            crate::qemu::TCG_ACCEL[0],
            crate::qemu::TCG_ACCEL[1],
            "-machine",
            self.machine,
            "-m",
            &self.memory_mib.to_string(),
            "-smp",
            "2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut push = |x: &str, y: String| {
            a.push(x.to_string());
            a.push(y);
        };
        if let Some(vars) = vars {
            push(
                "-drive",
                "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE.fd".into(),
            );
            push(
                "-drive",
                format!("if=pflash,format=raw,unit=1,file={}", vars.display()),
            );
        }
        let (cd, disk_index, nic_index) = match from {
            BootFrom::Iso => (Some(0), 1, 2),
            BootFrom::DiskThenPxe => (None, 0, 1),
            BootFrom::Pxe => (None, 1, 0),
        };
        push(
            "-drive",
            format!("file={},format=raw,if=none,id=d0", disk.display()),
        );
        let serial = format!("FERRY{}", self.name.to_uppercase().replace('-', ""));
        let dev = match self.bus {
            DiskBus::Ide | DiskBus::Sata => format!("ide-hd,drive=d0,bus=ide.0,serial={serial}"),
            DiskBus::Virtio => format!("virtio-blk-pci,drive=d0,serial={serial}"),
            DiskBus::Nvme => format!("nvme,drive=d0,serial={serial}"),
        };
        push("-device", format!("{dev},bootindex={disk_index}"));
        if let Some(i) = cd {
            push(
                "-drive",
                format!(
                    "file={},format=raw,media=cdrom,if=none,id=cd0",
                    lab.iso.display()
                ),
            );
            // PIIX has its own IDE buses; q35's AHCI ports are ide.N.
            let bus = if self.machine == "pc" {
                "ide.1"
            } else {
                "ide.2"
            };
            push(
                "-device",
                format!("ide-cd,drive=cd0,bus={bus},bootindex={i}"),
            );
        }
        push(
            "-netdev",
            format!("user,id=n0,tftp={},bootfile=boot.ipxe", lab.pxe.display()),
        );
        push(
            "-device",
            format!(
                "{},id=nic0,netdev=n0,mac={},bootindex={nic_index}",
                self.nic, self.mac
            ),
        );
        push(
            "-qmp",
            format!("unix:{},server=on,wait=off", lab.qmp(&self.name).display()),
        );
        for x in ["-display", "none", "-monitor", "none", "-serial", "stdio"] {
            a.push(x.to_string());
        }
        a
    }
}

/// The source server of the Debian IDE fixture: i440FX, PIIX IDE, e1000,
/// SeaBIOS.
pub fn source_hardware() -> Hardware {
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

/// A newer machine: Q35, OVMF (UEFI), NVMe, virtio-net.
pub fn uefi_nvme_target() -> Hardware {
    Hardware {
        name: "uefi-nvme".into(),
        uefi: true,
        machine: "q35",
        bus: DiskBus::Nvme,
        nic: "virtio-net-pci",
        mac: "52:54:00:e2:e0:02".into(),
        memory_mib: 1024,
    }
}

/// A running `ferry serve` and the agent media that point at it.
pub struct Lab {
    /// The manager; its library holds the captured images.
    pub mgr: Manager,
    /// The lab's working directory (media, disks, logs).
    pub dir: PathBuf,
    /// The agent ISO (BIOS and UEFI).
    pub iso: PathBuf,
    /// The PXE directory, served by QEMU's TFTP.
    pub pxe: PathBuf,
}

/// What a finished job reported.
#[derive(Clone, Debug)]
pub struct JobOutcome {
    /// `ferry job --follow --json`'s final view.
    pub view: serde_json::Value,
    /// Wall time from start to end.
    pub elapsed: Duration,
}

impl JobOutcome {
    /// Step `i`'s result.
    pub fn result(&self, i: usize) -> &serde_json::Value {
        &self.view["steps"][i]["result"]
    }
}

impl Lab {
    /// Starts `ferry serve` (on `library`, else a temporary one) and
    /// builds the agent media into `dir`, which is emptied first.
    pub fn start(dir: &Path, library: Option<&Path>) -> Lab {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let mgr = Manager::start_with_library(library);
        let initrd = dir.join("initrd.img");
        let t = Instant::now();
        ok(Command::new(ferry_bin())
            .args(["boot", "initramfs", "--output"])
            .arg(&initrd)
            .arg("--agent")
            .arg(agent_bin()));
        let cmdline = format!("{AGENT_CMDLINE} {}", mgr.guest_cmdline());
        let iso = dir.join("ferry-agent.iso");
        ok(Command::new(ferry_bin())
            .args(["boot", "iso", "--output"])
            .arg(&iso)
            .arg("--initrd")
            .arg(&initrd)
            .args(["--cmdline", &cmdline]));
        let pxe = dir.join("pxe");
        ok(Command::new(ferry_bin())
            .args(["boot", "pxe", "--output"])
            .arg(&pxe)
            .arg("--initrd")
            .arg(&initrd)
            .args(["--cmdline", &cmdline]));
        eprintln!(
            "lab: ferry serve at {}; agent media (ISO, PXE) built in {:.0} s",
            mgr.url(),
            t.elapsed().as_secs_f64()
        );
        Lab {
            mgr,
            dir: dir.to_path_buf(),
            iso,
            pxe,
        }
    }

    /// Where the console log of `name` goes.
    pub fn log(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.console.log"))
    }

    /// Boots `hw` with `disk`, from `from`; the console goes to
    /// `<dir>/<log>.console.log`. UEFI machines keep their NVRAM in
    /// `<dir>/<name>.vars.fd` across boots, as a real machine does.
    pub fn boot(&self, hw: &Hardware, disk: &Path, from: BootFrom, log: &str) -> Vm {
        let vars = hw.uefi.then(|| {
            let v = self.dir.join(format!("{}.vars.fd", hw.name));
            if !v.exists() {
                std::fs::copy("/usr/share/OVMF/OVMF_VARS.fd", &v)
                    .expect("copying /usr/share/OVMF/OVMF_VARS.fd (package ovmf)");
            }
            v
        });
        let args = hw.qemu_args(disk, from, self, vars.as_deref());
        Vm::boot_args(&args, &self.log(log))
    }

    /// Waits until the agent on `hw` has reported its survey; returns its
    /// mailbox id.
    pub fn wait_for_agent(&self, hw: &Hardware, timeout: Duration) -> String {
        self.mgr.wait_for_agent(&hw.mac, timeout).0
    }

    /// Waits for an agent on `hw` that is none of `known` (the mailboxes
    /// of its earlier boots) to report its survey, idle; returns its id.
    pub fn wait_for_new_agent(&self, hw: &Hardware, known: &[String], timeout: Duration) -> String {
        let t = Instant::now();
        loop {
            for id in self.mgr.agents_with_mac(&hw.mac) {
                if known.contains(&id) {
                    continue;
                }
                if self
                    .status(&id)
                    .is_some_and(|s| s.get("survey").is_some() && s["state"] == "idle")
                {
                    return id;
                }
            }
            assert!(
                t.elapsed() < timeout,
                "{}: no new agent (besides {known:?}) within {timeout:?}",
                hw.name
            );
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// The QMP socket of machine `name`.
    fn qmp(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.qmp"))
    }

    /// Sends one QMP command (JSON) to the running machine `hw`; returns
    /// the answer's line. Panics when QEMU answers with an error.
    fn qmp_command(&self, hw: &Hardware, command: &str) -> String {
        use std::io::{BufRead, BufReader, Write};
        let path = self.qmp(&hw.name);
        let sock = std::os::unix::net::UnixStream::connect(&path)
            .unwrap_or_else(|e| panic!("connecting to QMP at {}: {e}", path.display()));
        sock.set_read_timeout(Some(Duration::from_secs(10))).ok();
        let mut reader = BufReader::new(sock.try_clone().expect("QMP socket"));
        let mut w = sock;
        let mut answer = |cmd: &str| -> String {
            writeln!(w, "{cmd}").expect("writing to QMP");
            let mut line = String::new();
            loop {
                line.clear();
                reader.read_line(&mut line).expect("reading QMP");
                // The greeting and events come in between; the answer is
                // `return` or `error`.
                if line.contains("\"return\"") || line.contains("\"error\"") || line.is_empty() {
                    return line;
                }
            }
        };
        answer(r#"{"execute":"qmp_capabilities"}"#);
        let r = answer(command);
        assert!(r.contains("\"return\""), "{}: QMP {command}: {r}", hw.name);
        r
    }

    /// Plugs (`up`) or pulls the network cable of the running machine
    /// `hw`, through QEMU's QMP `set_link`: the guest sees its link go
    /// down and every packet is lost until it comes back.
    pub fn set_link(&self, hw: &Hardware, up: bool) {
        self.qmp_command(
            hw,
            &format!(r#"{{"execute":"set_link","arguments":{{"name":"n0","up":{up}}}}}"#),
        );
        eprintln!(
            "lab: {}: network cable {}",
            hw.name,
            if up { "plugged in" } else { "pulled" }
        );
    }

    /// From the next reset on, the running machine `hw` boots from its
    /// disk before the network (as a machine booted once by PXE to be
    /// redeployed): QMP `qom-set` of the NIC's `bootindex`.
    pub fn boot_disk_next(&self, hw: &Hardware) {
        self.qmp_command(
            hw,
            r#"{"execute":"qom-set","arguments":{"path":"/machine/peripheral/nic0","property":"bootindex","value":9}}"#,
        );
    }

    /// Runs an operator command that starts a job (`capture --agent ...`,
    /// `deploy --agent ...`) with `--follow --json`, its progress on
    /// stderr; returns the final view. Panics, with the agent's error,
    /// when the job fails.
    pub fn job(&self, args: &[&str]) -> JobOutcome {
        let t = Instant::now();
        eprintln!("lab: ferry {}", args.join(" "));
        let out = self
            .mgr
            .ferry()
            .args(args)
            .args(["--follow", "--json"])
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("running ferry {}: {e}", args.join(" ")));
        let view: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "ferry {}: no job view on stdout ({e}): {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout)
            )
        });
        assert!(
            out.status.success() && view["state"] == "finished",
            "ferry {} did not finish: {view:#}",
            args.join(" ")
        );
        JobOutcome {
            view,
            elapsed: t.elapsed(),
        }
    }

    /// Agent `id`'s status as its mailbox holds it.
    pub fn status(&self, id: &str) -> Option<serde_json::Value> {
        self.mgr.mailbox_file(id, "status.json")
    }

    /// Waits until agent `id`'s status says `state`; returns the status.
    pub fn wait_for_state(&self, id: &str, state: &str, timeout: Duration) -> serde_json::Value {
        let t = Instant::now();
        loop {
            if let Some(s) = self.status(id) {
                if s["state"] == state {
                    return s;
                }
                assert!(
                    t.elapsed() < timeout,
                    "agent {id} did not reach state {state:?} within {timeout:?}; status: {s:#}"
                );
            } else {
                assert!(
                    t.elapsed() < timeout,
                    "agent {id} has no status after {timeout:?}"
                );
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    }
}

/// What an offline capture did.
pub struct Captured {
    /// The source's agent (mailbox id).
    pub agent: String,
    /// Bytes read from the source disk (used blocks only).
    pub bytes_read: u64,
    /// Bytes the capture added to the library (compressed, deduplicated).
    pub bytes_stored: u64,
    /// From power-on to the agent's report.
    pub agent_after: Duration,
    /// The capture job, start to end.
    pub capture: Duration,
}

/// How [`Lab::deploy_with`] boots its machine.
pub struct Boot<'a> {
    /// Its boot order (PXE first for a disk that already boots).
    pub from: BootFrom,
    /// The machine's earlier mailboxes: the agent to deploy through is a
    /// new one.
    pub known: &'a [String],
    /// The console goes to `<log>.console.log`.
    pub log: String,
}

impl Boot<'_> {
    /// A machine's first boot: a blank disk, then PXE.
    pub fn first(hw: &Hardware) -> Boot<'static> {
        Boot {
            from: BootFrom::DiskThenPxe,
            known: &[],
            log: hw.name.clone(),
        }
    }
}

/// What a migration did.
pub struct Migration {
    /// The target, now running the migrated OS.
    pub vm: Vm,
    /// The target's agent (mailbox id); the migrated OS reports there.
    pub agent: String,
    /// The deploy's report (`DeployReport`).
    pub deploy: serde_json::Value,
    /// The adapt report.
    pub adapt: serde_json::Value,
    /// The first-boot check's report (`status.first_boot`).
    pub first_boot: serde_json::Value,
    /// From power-on to the agent's report (through PXE).
    pub agent_after: Duration,
    /// The deploy job (deploy, adapt, reboot), start to end.
    pub deploy_time: Duration,
    /// From the reboot to `login:`.
    pub login_after: Duration,
    /// From `login:` to the first-boot report.
    pub report_after: Duration,
}

impl Lab {
    /// Boots `hw`, whose OS is on `disk`, from the agent ISO, captures the
    /// disk offline into the library as `image` (`ferry capture --agent
    /// ... --poweroff`), and waits for it to power off.
    pub fn capture_offline(&self, hw: &Hardware, disk: &Path, image: &str) -> Captured {
        let mut vm = self.boot(hw, disk, BootFrom::Iso, &hw.name);
        let t = Instant::now();
        let agent = self.wait_for_agent(hw, AGENT_TIMEOUT);
        let agent_after = t.elapsed();
        eprintln!(
            "lab: {}: agent {agent} reported {:.0} s after power-on",
            hw.name,
            agent_after.as_secs_f64()
        );
        let job = self.job(&[
            "capture",
            "--agent",
            &agent,
            "--name",
            image,
            "--disk",
            hw.bus.guest_path(),
            "--poweroff",
        ]);
        let stats = &job.result(0)["stats"];
        if let Err(e) = vm.wait_exit(Duration::from_secs(120)) {
            panic!("{}: did not power off after its capture: {e}", hw.name);
        }
        Captured {
            agent,
            bytes_read: stats["bytes_read"].as_u64().unwrap_or(0),
            bytes_stored: stats["stored_new"].as_u64().unwrap_or(0),
            agent_after,
            capture: job.elapsed,
        }
    }

    /// Boots `hw` with `disk` (blank, so it falls through to PXE and the
    /// agent), deploys `image` onto it with `ferry deploy --agent ...
    /// --adapt --reboot`, waits for the migrated OS to reach `login:` and
    /// for its first-boot report in the agent's mailbox.
    pub fn migrate(&self, image: &str, hw: &Hardware, disk: &Path) -> Migration {
        self.deploy_with(image, hw, disk, &Boot::first(hw), |_| {})
    }

    /// As [`Lab::migrate`], with the machine booted as `boot` says, and
    /// `during(agent)` run beside the deploy job (to disturb it).
    pub fn deploy_with(
        &self,
        image: &str,
        hw: &Hardware,
        disk: &Path,
        boot: &Boot<'_>,
        during: impl FnOnce(&str) + Send,
    ) -> Migration {
        let mut vm = self.boot(hw, disk, boot.from, &boot.log);
        let t = Instant::now();
        let agent = self.wait_for_new_agent(hw, boot.known, AGENT_TIMEOUT);
        let agent_after = t.elapsed();
        eprintln!(
            "lab: {}: agent {agent} reported by PXE {:.0} s after power-on",
            hw.name,
            agent_after.as_secs_f64()
        );
        let firmware = if hw.uefi { "uefi" } else { "bios" };
        let args = [
            "deploy",
            image,
            "--agent",
            &agent,
            "--target",
            hw.bus.guest_path(),
            "--firmware",
            firmware,
            "--adapt",
            "--reboot",
        ];
        let job = std::thread::scope(|s| {
            let beside = s.spawn(|| during(&agent));
            let job = self.job(&args);
            if let Err(e) = beside.join() {
                std::panic::resume_unwind(e);
            }
            job
        });
        let deploy = job.result(0)["deploy"].clone();
        let adapt = job.result(0)["adapt"].clone();
        eprintln!(
            "lab: {}: deployed and adapted in {:.0} s: {} MiB written, {} MiB fetched",
            hw.name,
            job.elapsed.as_secs_f64(),
            deploy_sum(&deploy, "bytes_written") >> 20,
            deploy_sum(&deploy, "bytes_fetched") >> 20
        );
        eprintln!(
            "lab: {}: boot loader: {}",
            hw.name,
            adapt["bootloader"]["how"]
                .as_str()
                .unwrap_or("(none reported)")
        );
        let (login_after, first_boot, report_after) = self.migrated_boot(&mut vm, hw, &agent);
        Migration {
            vm,
            agent,
            deploy,
            adapt,
            first_boot,
            agent_after,
            deploy_time: job.elapsed,
            login_after,
            report_after,
        }
    }

    /// After the job's reboot: waits for the migrated server on `vm` to
    /// reach `login:`, then for its first-boot report in `agent`'s
    /// mailbox. Returns the time to `login:`, the report, and the time
    /// from `login:` to it.
    fn migrated_boot(
        &self,
        vm: &mut Vm,
        hw: &Hardware,
        agent: &str,
    ) -> (Duration, serde_json::Value, Duration) {
        let from = vm.console().len();
        let t = Instant::now();
        if let Err(e) = vm.wait_for_after("login:", from, LOGIN_TIMEOUT) {
            panic!("{}: the migrated server did not reach login:\n{e}", hw.name);
        }
        let login_after = t.elapsed();
        eprintln!(
            "lab: {}: login: {:.0} s after the reboot",
            hw.name,
            login_after.as_secs_f64()
        );
        let t = Instant::now();
        let status = self.wait_for_state(agent, "booted", REPORT_TIMEOUT);
        (login_after, status["first_boot"].clone(), t.elapsed())
    }
}

/// A blank `size`-byte disk image at `path` (sparse).
pub fn blank_disk(path: &Path, size: u64) -> PathBuf {
    let f =
        std::fs::File::create(path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    f.set_len(size)
        .unwrap_or_else(|e| panic!("sizing {}: {e}", path.display()));
    path.to_path_buf()
}

/// Sum of `key` over every partition report of a deploy result.
pub fn deploy_sum(deploy: &serde_json::Value, key: &str) -> u64 {
    deploy["disks"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|d| d["partitions"].as_array().into_iter().flatten())
        .filter_map(|p| p[key].as_u64())
        .sum()
}

/// What a direct migration did.
pub struct DirectMigration {
    /// The target's migration (its deploy, adapt, boot and first-boot
    /// report), as for a deploy from the library.
    pub target: Migration,
    /// The sender's result (`{"relay", "stats": SendStats, ...}`).
    pub sent: serde_json::Value,
    /// From power-on of both machines to both agents' reports.
    pub agents_after: Duration,
}

impl Lab {
    /// Boots `src_hw` (OS on `src_disk`) from the agent ISO and `hw`
    /// (blank `disk`) by PXE at the same time, then migrates the source
    /// directly (`ferry migrate --from ... --to ... --adapt --reboot
    /// --poweroff-source`): its disk streams to the target as it is read,
    /// never stored. Waits for the source to power off and the target to
    /// reach `login:` and report its first boot.
    pub fn migrate_direct(
        &self,
        label: &str,
        src_hw: &Hardware,
        src_disk: &Path,
        hw: &Hardware,
        disk: &Path,
    ) -> DirectMigration {
        let mut src_vm = self.boot(src_hw, src_disk, BootFrom::Iso, &src_hw.name);
        let mut vm = self.boot(hw, disk, BootFrom::DiskThenPxe, &hw.name);
        let t = Instant::now();
        let from = self.wait_for_agent(src_hw, AGENT_TIMEOUT);
        let to = self.wait_for_agent(hw, AGENT_TIMEOUT);
        let agents_after = t.elapsed();
        eprintln!(
            "lab: direct: agents {from} ({}) and {to} ({}) reported {:.0} s after power-on",
            src_hw.name,
            hw.name,
            agents_after.as_secs_f64()
        );
        let firmware = if hw.uefi { "uefi" } else { "bios" };
        let args = [
            "migrate",
            label,
            "--from",
            &from,
            "--disk",
            src_hw.bus.guest_path(),
            "--to",
            &to,
            "--target",
            hw.bus.guest_path(),
            "--firmware",
            firmware,
            "--adapt",
            "--reboot",
            "--poweroff-source",
            "--follow",
            "--json",
        ];
        eprintln!("lab: ferry {}", args.join(" "));
        let t = Instant::now();
        let out = self
            .mgr
            .ferry()
            .args(args)
            .stderr(Stdio::inherit())
            .output()
            .expect("running ferry migrate");
        let elapsed = t.elapsed();
        let view: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "ferry migrate: no JSON on stdout ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        assert!(
            out.status.success()
                && view["target"]["state"] == "finished"
                && view["source"]["state"] == "finished",
            "ferry migrate did not finish: {view:#}"
        );
        let result = &view["target"]["steps"][0]["result"];
        let (deploy, adapt) = (result["deploy"].clone(), result["adapt"].clone());
        let sent = view["source"]["steps"][0]["result"].clone();
        eprintln!(
            "lab: direct: {} → {} in {:.0} s: {} MiB read, {} MiB relayed, {} MiB written",
            src_hw.name,
            hw.name,
            elapsed.as_secs_f64(),
            sent["stats"]["bytes_read"].as_u64().unwrap_or(0) >> 20,
            sent["stats"]["bytes_sent"].as_u64().unwrap_or(0) >> 20,
            deploy_sum(&deploy, "bytes_written") >> 20
        );
        if let Err(e) = src_vm.wait_exit(Duration::from_secs(120)) {
            panic!("{}: did not power off after sending: {e}", src_hw.name);
        }
        let (login_after, first_boot, report_after) = self.migrated_boot(&mut vm, hw, &to);
        DirectMigration {
            target: Migration {
                vm,
                agent: to,
                deploy,
                adapt,
                first_boot,
                agent_after: agents_after,
                deploy_time: elapsed,
                login_after,
                report_after,
            },
            sent,
            agents_after,
        }
    }
}
