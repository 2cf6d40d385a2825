//! `./run demo`: a whole server migration, start to finish, on this
//! machine (QEMU under TCG; about 15 minutes):
//!
//! 1. build (or reuse from cache) the source server: Debian bookworm on an
//!    IDE disk, BIOS, MBR, an e1000 NIC;
//! 2. start `ferry serve` on a local image library (`$FERRY_LIBRARY`,
//!    default `./ferry-library`);
//! 3. build the agent's boot media (ISO and PXE), pointing at it;
//! 4. boot the source from the ISO and capture its disk offline;
//! 5. boot a new machine (UEFI, NVMe, a bigger disk, virtio-net) by PXE;
//! 6. deploy, adapt and reboot it;
//! 7. wait for `login:` and for the first-boot check, installed by adapt,
//!    to report through the mailbox.
//!
//! It prints every operator command it runs, the jobs' progress, and a
//! summary. The work directory is `$FERRY_DEMO_DIR` (default
//! `/var/tmp/ferry-demo`): consoles, disks and media stay there.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use ferry_tests::lab::{self, blank_disk, deploy_sum, Lab};
use ferry_tests::{debian_ide_fixture, ok};

const GIB: u64 = 1 << 30;

fn step(n: u32, what: &str) {
    eprintln!("\n== {n}/7 {what}");
}

fn mib(b: u64) -> String {
    format!("{:.0} MiB", b as f64 / (1u64 << 20) as f64)
}

fn secs(d: Duration) -> String {
    format!("{:.0} s", d.as_secs_f64())
}

fn main() -> ExitCode {
    if let Some(why) = lab::missing_prerequisite() {
        eprintln!("ferry demo: cannot run here: {why}");
        return ExitCode::FAILURE;
    }
    let work = PathBuf::from(
        std::env::var("FERRY_DEMO_DIR").unwrap_or_else(|_| "/var/tmp/ferry-demo".into()),
    );
    let library = std::env::var_os("FERRY_LIBRARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("ferry-library"));
    let library = std::path::absolute(&library).unwrap_or(library);
    let started = Instant::now();
    let mut phases: Vec<(&str, Duration)> = Vec::new();

    step(
        1,
        "the source server disk (Debian bookworm, IDE, BIOS; built once, then cached)",
    );
    let t = Instant::now();
    let fixture = debian_ide_fixture().join("debian-ide.img");
    phases.push(("source disk", t.elapsed()));

    step(
        2,
        &format!("ferry serve on the library {}", library.display()),
    );
    step(
        3,
        "the agent's boot media (initramfs, hybrid ISO, PXE directory)",
    );
    let t = Instant::now();
    let lab = Lab::start(&work, Some(&library));
    phases.push(("serve and media", t.elapsed()));
    eprintln!(
        "   media in {}: {}, {}",
        work.display(),
        lab.iso.display(),
        lab.pxe.display()
    );

    step(4, "offline capture: the source boots the agent ISO");
    let disk = work.join("source.img");
    ok(Command::new("cp")
        .arg("--sparse=always")
        .arg(&fixture)
        .arg(&disk));
    let image = format!(
        "demo-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    );
    let src = lab::source_hardware();
    let captured = lab.capture_offline(&src, &disk, &image);
    phases.push(("source to agent (ISO)", captured.agent_after));
    phases.push(("offline capture", captured.capture));

    step(
        5,
        "the new machine (UEFI, NVMe, 4 GiB disk, virtio-net) boots by PXE",
    );
    step(6, "deploy, adapt, reboot");
    let hw = lab::uefi_nvme_target();
    let target_disk = blank_disk(&work.join("target.img"), 4 * GIB);
    let mut m = lab.migrate(&image, &hw, &target_disk);
    phases.push(("target to agent (PXE)", m.agent_after));
    phases.push(("deploy + adapt", m.deploy_time));
    phases.push(("reboot to login:", m.login_after));
    phases.push(("first-boot report", m.report_after));

    step(7, "the migrated server");
    let check =
        m.vm.login_and_run(
            "root",
            "ferry",
            "hostname; findmnt -n -o SOURCE,SIZE /; ip -4 -o addr show scope global",
        )
        .unwrap_or_else(|e| format!("(could not log in: {e})"));
    eprintln!("{check}");
    let fb = &m.first_boot;
    let state = fb["system_state"].as_str().unwrap_or("?");
    let ok_state = state == "running" || state == "degraded";

    eprintln!("\n== summary");
    eprintln!(
        "   source disk        {} (IDE, BIOS/MBR)",
        mib(std::fs::metadata(&disk).map(|m| m.len()).unwrap_or(0))
    );
    eprintln!("   read by capture    {}", mib(captured.bytes_read));
    eprintln!("   stored in library  {}", mib(captured.bytes_stored));
    eprintln!(
        "   transferred        {} to the target (written {}, seeded {})",
        mib(deploy_sum(&m.deploy, "bytes_fetched")),
        mib(deploy_sum(&m.deploy, "bytes_written")),
        mib(deploy_sum(&m.deploy, "bytes_seeded"))
    );
    for (what, d) in &phases {
        eprintln!("   {what:<22} {}", secs(*d));
    }
    eprintln!("   total              {}", secs(started.elapsed()));
    eprintln!(
        "   target             {} ({}), {}, state {state}",
        fb["hostname"].as_str().unwrap_or("?"),
        fb["addresses"]
            .as_array()
            .map(|a| a
                .iter()
                .filter_map(|x| x.as_str())
                .collect::<Vec<_>>()
                .join(" "))
            .unwrap_or_default(),
        fb["kernel"].as_str().unwrap_or("?"),
    );
    eprintln!("   agent mailbox      {}", m.agent);
    eprintln!("   library            {}", library.display());
    eprintln!("   consoles           {}", log_list(&work));
    if ok_state {
        eprintln!("\nferry demo: the server migrated and reported in");
        ExitCode::SUCCESS
    } else {
        eprintln!("\nferry demo: the migrated server reported state {state:?}");
        ExitCode::FAILURE
    }
}

fn log_list(work: &Path) -> String {
    work.join("*.console.log").display().to_string()
}
