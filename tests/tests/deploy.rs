//! Issue 4's proof: the real Debian server in two layouts, captured with
//! `ferry capture --disk` and deployed onto loop devices of equal, bigger
//! and smaller size. After each deploy: every file system is fsck-clean,
//! every file compares equal with the source (`rsync -aHAX` itemize, or
//! mtools for the ESP, which this kernel cannot mount), UUIDs and labels are
//! the source's, a bigger target has a grown file system, swap is made
//! again with its UUID and label. Also: a disk in use and a target too small
//! are refused before anything is written.

use std::path::Path;
use std::process::Command;

use ferry_tests::{
    debian_fixture, debian_gpt_fixture, fails, ferry, is_root, json, ok, require,
    rsync_differences, Loop, Mount,
};
use serde_json::Value;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn survey(dev: &Path) -> Value {
    let v = json(
        ferry(Path::new("/nonexistent"))
            .args(["survey", "--disks"])
            .arg(dev),
    );
    v.as_array()
        .and_then(|a| a.first())
        .cloned()
        .unwrap_or_else(|| panic!("no survey for {}: {v:#}", dev.display()))
}

fn partitions(layout: &Value) -> &Vec<Value> {
    layout["partitions"].as_array().expect("partitions")
}

/// The files of a vfat partition, extracted with mtools.
fn vfat_files(dev: &Path, into: &Path) {
    std::fs::create_dir_all(into).expect("mkdir");
    ok(Command::new("mcopy")
        .args(["-s", "-n", "-m", "-i"])
        .arg(dev)
        .arg("::/")
        .arg(into));
}

/// Deploys `image` onto a fresh `size`-byte loop device and checks the
/// result against the source disk `src`. Returns the target's survey.
fn deploy_and_check(lib: &Path, image: &str, src: &Path, size: u64, work: &Path) -> Value {
    let name = format!("{image}-{size}");
    deploy_and_check_with(&name, src, size, work, |target| {
        json(ferry(lib).args(["deploy", image, "--target"]).arg(target))
    })
}

/// Runs `deploy` (which returns the deploy's JSON report) onto a fresh
/// `size`-byte loop device and checks the result against the source disk
/// `src`. Returns the target's survey.
fn deploy_and_check_with(
    name: &str,
    src: &Path,
    size: u64,
    work: &Path,
    deploy: impl FnOnce(&Path) -> Value,
) -> Value {
    let file = work.join(format!("{name}.img"));
    ok(Command::new("truncate")
        .args(["-s", &size.to_string()])
        .arg(&file));
    let target = Loop::attach(&file, false, None);
    let report = deploy(&target.0);
    let steps = report["disks"][0]["partitions"]
        .as_array()
        .expect("steps")
        .clone();
    let source = survey(src);
    let got = survey(&target.0);
    assert_eq!(got["table"]["kind"], source["table"]["kind"], "{got:#}");
    for sp in partitions(&source) {
        let n = sp["number"].as_u64().expect("number") as u32;
        let tp = partitions(&got)
            .iter()
            .find(|p| p["number"] == n)
            .unwrap_or_else(|| panic!("partition {n} missing on {}: {got:#}", target.0.display()));
        let (sfs, tfs) = (&sp["filesystem"], &tp["filesystem"]);
        assert_eq!(tfs["type"], sfs["type"], "partition {n}");
        assert_eq!(tfs["uuid"], sfs["uuid"], "partition {n} keeps its UUID");
        assert_eq!(tfs["label"], sfs["label"], "partition {n} keeps its label");
        let part_size = tp["size"].as_u64().expect("size");
        let method = steps
            .iter()
            .find(|s| s["number"] == n)
            .map(|s| s["method"]["method"].clone())
            .unwrap_or_default();
        let fs_type = sfs["type"].as_str().unwrap_or_default();
        if fs_type == "swap" {
            assert_eq!(method, "swap");
            continue;
        }
        // Grown or made to fill the partition (to a block).
        if method == "tree"
            || steps
                .iter()
                .any(|s| s["number"] == n && s["method"]["grow"] == true)
        {
            let fs_size = tfs["size"].as_u64().expect("fs size");
            assert!(
                part_size - fs_size < 4 * MIB,
                "partition {n}: file system {fs_size} does not fill its {part_size}-byte partition"
            );
        }
        // Read-only checks, independent of the deploy's own.
        let dev = target.part(n);
        let src_range = (
            sp["start"].as_u64().expect("start"),
            sp["size"].as_u64().expect("size"),
        );
        let src_dev = Loop::attach(src, true, Some(src_range));
        match fs_type {
            "ext4" => {
                ok(Command::new("e2fsck").arg("-fn").arg(&dev));
                let a = Mount::read_only(&src_dev.0, "ext4");
                let b = Mount::read_only(&dev, "ext4");
                let diff = rsync_differences(&a.dir, &b.dir);
                assert!(diff.is_empty(), "partition {n} differs:\n{diff}");
            }
            "vfat" => {
                ok(Command::new("fsck.vfat").arg("-n").arg(&dev));
                let (a, b) = (work.join("esp-src"), work.join("esp-dst"));
                let _ = std::fs::remove_dir_all(&a);
                let _ = std::fs::remove_dir_all(&b);
                vfat_files(&src_dev.0, &a);
                vfat_files(&dev, &b);
                ok(Command::new("diff").arg("-r").arg(&a).arg(&b));
            }
            other => panic!("unexpected file system {other} in the fixture"),
        }
    }
    drop(target);
    std::fs::remove_file(&file).expect("rm target");
    got
}

fn root_size(layout: &Value, label: &str) -> u64 {
    partitions(layout)
        .iter()
        .find(|p| p["filesystem"]["label"] == label)
        .and_then(|p| p["size"].as_u64())
        .unwrap_or_else(|| panic!("no {label} partition: {layout:#}"))
}

#[test]
fn layout_a_mbr_root_deploys_to_equal_bigger_and_smaller_disks() {
    require!(
        is_root(),
        "layout_a",
        "needs root for loop devices and mount"
    );
    let fix = debian_fixture();
    let src = fix.join("debian.img");
    let work = tempfile::tempdir_in("/var/tmp").expect("tempdir");
    let lib = work.path().join("lib");
    ok(ferry(&lib)
        .args(["capture", "--disk"])
        .arg(&src)
        .args(["--name", "web01"]));

    let equal = deploy_and_check(&lib, "web01", &src, 2 * GIB, work.path());
    assert_eq!(root_size(&equal, "root"), 2 * GIB - MIB);
    let bigger = deploy_and_check(&lib, "web01", &src, 4 * GIB, work.path());
    assert_eq!(root_size(&bigger, "root"), 4 * GIB - MIB);
    let smaller = deploy_and_check(&lib, "web01", &src, 1536 * MIB, work.path());
    assert_eq!(root_size(&smaller, "root"), 1536 * MIB - MIB);

    // GRUB's boot code and core.img came along on an MBR/BIOS deploy.
    let target = work.path().join("boot.img");
    ok(Command::new("truncate").args(["-s", "3G"]).arg(&target));
    ok(ferry(&lib)
        .args(["deploy", "web01", "--target"])
        .arg(&target));
    let head = |p: &Path| {
        let mut f = std::fs::File::open(p).expect("open");
        let mut b = vec![0u8; MIB as usize];
        std::io::Read::read_exact(&mut f, &mut b).expect("read");
        b
    };
    let (a, b) = (head(&src), head(&target));
    assert_eq!(a[..440], b[..440], "MBR boot code");
    assert_eq!(a[512..], b[512..], "the boot gap (core.img)");
    assert!(a[512..].iter().any(|&x| x != 0), "the fixture has core.img");

    // Deploying again (an interrupted deploy rerun) writes only what the
    // grow changed: everything else is already in place.
    let again = json(
        ferry(&lib)
            .args(["deploy", "web01", "--target"])
            .arg(&target),
    );
    let p = &again["disks"][0]["partitions"][0];
    let (written, seeded) = (
        p["bytes_written"].as_u64().expect("written"),
        p["bytes_seeded"].as_u64().expect("seeded"),
    );
    assert!(
        seeded > 500 * MIB && written < seeded / 20,
        "{written} written, {seeded} seeded"
    );

    // Refusals: too small (with the shortfall), and in use.
    let tiny = work.path().join("tiny.img");
    ok(Command::new("truncate").args(["-s", "900M"]).arg(&tiny));
    let err = fails(ferry(&lib).args(["deploy", "web01", "--target"]).arg(&tiny));
    assert!(err.contains("more bytes") && err.contains("MiB"), "{err}");
    let busy = Loop::attach(&target, false, None);
    ok(Command::new("partx").arg("-a").arg(&busy.0));
    let before = head(&target);
    {
        let _m = Mount::read_only(&busy.part(1), "ext4");
        let err = fails(
            ferry(&lib)
                .args(["deploy", "web01", "--target"])
                .arg(&busy.0),
        );
        assert!(err.contains("mounted") && err.contains("refusing"), "{err}");
    }
    assert_eq!(head(&target), before, "nothing written to a disk in use");
}

#[test]
fn layout_b_gpt_esp_boot_root_swap_deploys_to_equal_bigger_and_smaller_disks() {
    require!(
        is_root(),
        "layout_b",
        "needs root for loop devices and mount"
    );
    let fix = debian_gpt_fixture();
    let src = fix.join("debian-gpt.img");
    let work = tempfile::tempdir_in("/var/tmp").expect("tempdir");
    let lib = work.path().join("lib");
    let m = json(
        ferry(&lib)
            .args(["capture", "--disk"])
            .arg(&src)
            .args(["--name", "db01"]),
    );
    let kinds: Vec<&str> = m["disks"][0]["content"]["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| p["content"]["kind"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        kinds,
        ["used-blocks", "used-blocks", "used-blocks", "swap"],
        "ESP, /boot, root, swap"
    );
    let source = survey(&src);
    let src_root = root_size(&source, "root");
    // The root takes whatever the disk has beyond the fixed partitions: on
    // an equal disk that is its own size plus the alignment slack the
    // source left at the end (up to 2 MiB).
    let equal = deploy_and_check(&lib, "db01", &src, 3 * GIB, work.path());
    let eq_root = root_size(&equal, "root");
    assert!(
        (src_root..=src_root + 2 * MIB).contains(&eq_root),
        "{eq_root} vs {src_root}"
    );
    let bigger = deploy_and_check(&lib, "db01", &src, 5 * GIB, work.path());
    assert_eq!(root_size(&bigger, "root"), eq_root + 2 * GIB);
    let smaller = deploy_and_check(&lib, "db01", &src, 2 * GIB, work.path());
    assert_eq!(root_size(&smaller, "root"), eq_root - GIB);
    for (l, name) in [
        (&equal, "equal"),
        (&bigger, "bigger"),
        (&smaller, "smaller"),
    ] {
        // Fixed partitions keep their sizes and GPT identities.
        for label in ["ESP", "boot", "swap"] {
            assert_eq!(
                root_size(l, label),
                root_size(&source, label),
                "{name} {label}"
            );
        }
        assert_eq!(
            l["table"]["disk_guid"], source["table"]["disk_guid"],
            "{name}"
        );
        for (a, b) in partitions(l).iter().zip(partitions(&source)) {
            assert_eq!(a["kind"]["unique_guid"], b["kind"]["unique_guid"], "{name}");
            assert_eq!(a["kind"]["type_guid"], b["kind"]["type_guid"], "{name}");
            assert_eq!(a["kind"]["name"], b["kind"]["name"], "{name}");
        }
    }
}

#[test]
fn two_disks_swap_places_and_bios_becomes_uefi() {
    require!(is_root(), "two_disks", "needs root for loop devices");
    let work = tempfile::tempdir_in("/var/tmp").expect("tempdir");
    let w = work.path();
    let lib = w.join("lib");
    // Two small data disks, each an MBR with one ext4 made by mke2fs -d.
    let mut disks = Vec::new();
    for (i, uuid) in [
        "0d15c000-0000-4000-8000-000000000000",
        "0d15c000-0000-4000-8000-000000000001",
    ]
    .iter()
    .enumerate()
    {
        let tree = w.join(format!("tree{i}"));
        std::fs::create_dir_all(tree.join("etc")).expect("mkdir");
        std::fs::write(tree.join("etc/disk"), format!("disk {i}\n")).expect("write");
        let disk = w.join(format!("disk{i}.img"));
        ferry_tests::sh(&format!(
            "truncate -s 96M {d} && echo 'start=2048, type=83' | sfdisk -q {d} && \
             mke2fs -q -F -t ext4 -U {uuid} -L data{i} -E offset=1048576 -d {t} {d} 97280k",
            d = disk.display(),
            t = tree.display()
        ));
        disks.push(disk);
    }
    ok(ferry(&lib)
        .args(["capture", "--disk"])
        .arg(&disks[0])
        .arg("--disk")
        .arg(&disks[1])
        .args(["--name", "pair"]));
    let targets: Vec<_> = (0..2).map(|i| w.join(format!("target{i}.img"))).collect();
    for t in &targets {
        ok(Command::new("truncate").args(["-s", "1G"]).arg(t));
    }
    // The same plan options for `plan` and `deploy`.
    let planned = |cmd: &str| {
        let mut c = ferry(&lib);
        c.args([
            cmd,
            "pair",
            "--map",
            "0:1",
            "--map",
            "1:0",
            "--firmware",
            "uefi",
        ])
        .arg("--target")
        .arg(&targets[0])
        .arg("--target")
        .arg(&targets[1]);
        c
    };
    let plan = json(&mut planned("plan"));
    assert_eq!(plan["firmware"], "uefi", "{plan:#}");
    ok(&mut planned("deploy"));
    let labels = |t: &Path| -> Vec<String> {
        partitions(&survey(t))
            .iter()
            .map(|p| p["filesystem"]["label"].as_str().unwrap_or("-").to_string())
            .collect()
    };
    // Image disk 0 landed on target 1, disk 1 on target 0. The boot disk
    // (image disk 0) became GPT with a fresh ESP in front of its data.
    let boot = survey(&targets[1]);
    assert_eq!(boot["table"]["kind"], "gpt", "{boot:#}");
    assert!(
        partitions(&boot).iter().any(|p| p["role"] == "esp"),
        "{boot:#}"
    );
    assert!(
        labels(&targets[1]).contains(&"data0".to_string()),
        "{boot:#}"
    );
    assert_eq!(labels(&targets[0]), ["data1"]);
    for (t, n) in [(&targets[1], "data0"), (&targets[0], "data1")] {
        let s = survey(t);
        let p = partitions(&s)
            .iter()
            .find(|p| p["filesystem"]["label"] == n)
            .expect("data partition");
        let part = Loop::attach(
            t,
            true,
            Some((
                p["start"].as_u64().unwrap_or(0),
                p["size"].as_u64().unwrap_or(0),
            )),
        );
        ok(Command::new("e2fsck").arg("-fn").arg(&part.0));
        let cat = ok(Command::new("debugfs")
            .args(["-R", "cat /etc/disk"])
            .arg(&part.0));
        assert_eq!(cat.trim(), format!("disk {}", &n[4..]));
    }
}

/// Every file under `dir` (recursively), relative paths.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p.strip_prefix(dir).expect("under").display().to_string());
            }
        }
    }
    out.sort();
    out
}

const RELAY: &str = "5eed0123456789abcdef0123456789ab";

/// `ferry capture --disk SRC --name NAME --relay RELAY --json` started in
/// the background: the sending half of a direct migration.
fn send_directly(lib: &Path, src: &Path, name: &str) -> std::process::Child {
    ferry(lib)
        .args(["capture", "--disk"])
        .arg(src)
        .args(["--name", name, "--relay", RELAY, "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting the sender")
}

/// Runs the receiving half while watching the sender: a sender that fails
/// and leaves the receiver waiting (it waits 30 min for a first segment)
/// fails the test at once with the sender's error. A refused migration
/// ends the sender first, so the receiver gets a grace period to finish.
fn receive_watching(sender: &mut std::process::Child, cmd: &mut Command) -> std::process::Output {
    use std::time::{Duration, Instant};
    let mut receiver = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting the receiver");
    let mut sender_failed: Option<Instant> = None;
    loop {
        if receiver.try_wait().expect("receiver").is_some() {
            return receiver.wait_with_output().expect("receiver's output");
        }
        if sender_failed.is_none() {
            if let Some(st) = sender.try_wait().expect("sender") {
                if !st.success() {
                    sender_failed = Some(Instant::now());
                }
            }
        }
        if sender_failed.is_some_and(|t| t.elapsed() > Duration::from_secs(60)) {
            let _ = receiver.kill();
            let mut err = String::new();
            if let Some(mut e) = sender.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            panic!("the sender failed and the receiver still waits for it: {err}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Issue 8's direct migration, between two ferry processes that share only
/// the library's store: the GPT server (ESP, /boot, root, swap) streams
/// onto a bigger disk while it is read. The deploy checks as any other
/// (fsck, every file, UUIDs, labels, swap), and the library holds nothing
/// afterwards: no image, no pack, no relay segment.
#[test]
fn direct_migration_streams_a_server_onto_its_target_and_stores_nothing() {
    require!(
        is_root(),
        "direct_migration",
        "needs root for loop devices and mount"
    );
    let src = debian_gpt_fixture().join("debian-gpt.img");
    let work = tempfile::tempdir_in("/var/tmp").expect("tempdir");
    let lib = work.path().join("lib");
    let mut sent = Value::Null;
    let mut report = Value::Null;
    let got = deploy_and_check_with("direct", &src, 4 * GIB, work.path(), |target| {
        let mut sender = send_directly(&lib, &src, "db01");
        let got = receive_watching(
            &mut sender,
            ferry(&lib)
                .args(["deploy", "db01", "--relay", RELAY, "--json", "--target"])
                .arg(target),
        );
        assert!(
            got.status.success(),
            "receiver: {}",
            String::from_utf8_lossy(&got.stderr)
        );
        report = serde_json::from_slice(&got.stdout).expect("receiver's JSON");
        let out = sender.wait_with_output().expect("sender");
        assert!(
            out.status.success(),
            "sender: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        sent = serde_json::from_slice(&out.stdout).expect("sender's JSON");
        report.clone()
    });
    let (read, relayed) = (
        sent["bytes_read"].as_u64().expect("bytes_read"),
        sent["bytes_sent"].as_u64().expect("bytes_sent"),
    );
    let received: u64 = report["disks"][0]["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| p["bytes_fetched"].as_u64().unwrap_or(0))
        .sum();
    eprintln!(
        "direct: read {} MiB, relayed {} MiB (compressed), received {} MiB, deploy {:.1} s",
        read >> 20,
        relayed >> 20,
        received >> 20,
        report["seconds"].as_f64().unwrap_or(0.0)
    );
    assert!(read > 300 * MIB && relayed < read, "{sent:#}");
    // Every chunk sent was received: the partitions' and the head's (a
    // few hundred bytes, not in a partition's report).
    assert!(
        received <= relayed && relayed - received < MIB,
        "sent {relayed}, received {received}: {report:#}"
    );
    assert_eq!(partitions(&got).len(), 4, "{got:#}");
    let left = files_under(&lib);
    assert_eq!(
        left,
        ["ferry-library.json"],
        "a direct migration stores nothing in the library"
    );
}

/// A direct migration onto a smaller disk would need a file-tree deploy,
/// which reads the source's file system at random: the receiver refuses it
/// before writing anything, and its refusal stops the sender.
#[test]
fn a_direct_migration_that_needs_a_file_tree_is_refused_and_stops_the_sender() {
    require!(
        is_root(),
        "direct_refusal",
        "needs root for loop devices and mount"
    );
    let src = debian_fixture().join("debian.img");
    let work = tempfile::tempdir_in("/var/tmp").expect("tempdir");
    let lib = work.path().join("lib");
    let target = work.path().join("small.img");
    ok(Command::new("truncate").args(["-s", "1536M"]).arg(&target));
    let mut sender = send_directly(&lib, &src, "web01");
    let got = receive_watching(
        &mut sender,
        ferry(&lib)
            .args(["deploy", "web01", "--relay", RELAY, "--target"])
            .arg(&target),
    );
    assert!(!got.status.success(), "the receiver deployed");
    let err = String::from_utf8_lossy(&got.stderr);
    assert!(
        err.contains("partition 1 needs a file-tree deploy") && err.contains("direct migration"),
        "{err}"
    );
    let out = sender.wait_with_output().expect("sender");
    let serr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the sender went on");
    assert!(
        serr.contains("gave up") && serr.contains("needs a file-tree deploy"),
        "{serr}"
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(&target).expect("target").blocks(),
        0,
        "nothing was written to the target"
    );
    assert_eq!(files_under(&lib), ["ferry-library.json"]);
}
