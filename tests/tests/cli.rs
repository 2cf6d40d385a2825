//! The CLI as an operator meets it: bad input, crash safety, resumed restores.

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use ferry_tests::{fails, ferry, json, ok, write_disk_like};

fn first_file(dir: &Path) -> std::path::PathBuf {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<_> = fs::read_dir(&d)
            .expect("read dir")
            .map(|e| e.expect("entry").path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                stack.push(p);
            } else {
                return p;
            }
        }
    }
    panic!("no file under {}", dir.display());
}

#[test]
fn bad_input_gets_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lib = dir.path().join("lib");
    let src = dir.path().join("disk.img");
    write_disk_like(&src, 24, 1);

    let err = fails(ferry(&lib).args(["capture", "/nonexistent/disk.img", "--name", "x"]));
    assert!(err.contains("/nonexistent/disk.img"), "{err}");

    let notlib = dir.path().join("photos");
    fs::create_dir(&notlib).expect("mkdir");
    fs::write(notlib.join("cat.jpg"), b"meow").expect("write");
    let err = fails(ferry(&notlib).args(["image", "ls"]));
    assert!(
        err.contains("not a ferry library") && err.contains("photos"),
        "{err}"
    );
    let err = fails(
        ferry(&notlib)
            .arg("capture")
            .arg(&src)
            .args(["--name", "x"]),
    );
    assert!(err.contains("not a ferry library"), "{err}");
    assert_eq!(
        fs::read_dir(&notlib).expect("ls").count(),
        1,
        "nothing was written into a foreign directory"
    );

    ok(ferry(&lib).arg("capture").arg(&src).args(["--name", "v1"]));
    let err = fails(
        ferry(&lib)
            .args(["restore", "v1"])
            .arg(dir.path().join("missing-dir/out.img")),
    );
    assert!(err.contains("missing-dir/out.img"), "{err}");

    // One flipped byte in a pack.
    let pack = first_file(&lib.join("packs"));
    let mut bytes = fs::read(&pack).expect("read");
    let at = bytes.len() / 3;
    bytes[at] ^= 0x20;
    fs::write(&pack, &bytes).expect("write");
    let out = dir.path().join("out.img");
    let err = fails(ferry(&lib).arg("restore").arg("v1").arg(&out));
    assert!(
        err.contains(&pack.display().to_string()),
        "the error must name the pack: {err}"
    );
    assert!(err.contains("chunk"), "{err}");
    let verify = ferry(&lib).args(["image", "verify"]).output().expect("run");
    assert!(
        !verify.status.success(),
        "verify must exit non-zero on a damaged library"
    );
    let report = String::from_utf8_lossy(&verify.stdout);
    assert!(
        report.contains("DAMAGED") && report.contains(&pack.display().to_string()),
        "{report}"
    );
    bytes[at] ^= 0x20;
    fs::write(&pack, &bytes).expect("write");

    // A truncated index file.
    let idx = first_file(&lib.join("index"));
    let bytes = fs::read(&idx).expect("read");
    fs::write(&idx, &bytes[..bytes.len() / 2]).expect("truncate");
    let err = fails(ferry(&lib).args(["image", "verify", "v1"]));
    assert!(
        err.contains(&idx.display().to_string()),
        "the error must name the index: {err}"
    );
    let err = fails(
        ferry(&lib)
            .arg("restore")
            .arg("v1")
            .arg(dir.path().join("o2.img")),
    );
    assert!(err.contains(&idx.display().to_string()), "{err}");
}

#[test]
fn a_target_too_small_is_refused_before_writing() {
    // A loop device is the only fixed-size target; without root, say so loudly.
    if !nix_is_root() {
        eprintln!(
            "SKIPPED a_target_too_small_is_refused_before_writing: needs root for a loop device"
        );
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let lib = dir.path().join("lib");
    let src = dir.path().join("disk.img");
    write_disk_like(&src, 16, 2);
    ok(ferry(&lib).arg("capture").arg(&src).args(["--name", "v1"]));
    let small = dir.path().join("small.img");
    fs::write(&small, vec![0xabu8; 8 << 20]).expect("write");
    let loopdev = ok(std::process::Command::new("losetup")
        .args(["-f", "--show"])
        .arg(&small));
    let loopdev = loopdev.trim().to_string();
    let err = fails(ferry(&lib).args(["restore", "v1", &loopdev]));
    let _ = std::process::Command::new("losetup")
        .args(["-d", &loopdev])
        .status();
    assert!(
        err.contains("needs") && err.contains("nothing was written"),
        "{err}"
    );
    assert!(
        fs::read(&small).expect("read").iter().all(|&b| b == 0xab),
        "the target was modified"
    );
}

fn nix_is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// A seed from the clock, printed so a failure can be replayed with FERRY_TEST_SEED.
fn seed() -> u64 {
    let s = std::env::var("FERRY_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("FERRY_TEST_SEED={s}");
    s
}

fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

#[test]
fn captures_killed_at_random_points_leave_a_clean_library() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lib = dir.path().join("lib");
    let src = dir.path().join("disk.img");
    write_disk_like(&src, 160, 3);

    // How long an uninterrupted capture takes here.
    let probe = dir.path().join("probe-lib");
    let t = Instant::now();
    ok(ferry(&probe)
        .arg("capture")
        .arg(&src)
        .args(["--name", "probe"]));
    let full = t.elapsed();
    fs::remove_dir_all(&probe).expect("cleanup");

    let mut x = seed();
    for i in 0..8 {
        let delay = Duration::from_micros(next(&mut x) % (full.as_micros() as u64).max(1));
        let mut child = ferry(&lib)
            .arg("capture")
            .arg(&src)
            .args(["--name", &format!("killed-{i}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(delay);
        child.kill().expect("SIGKILL");
        child.wait().expect("wait");
        let report = json(ferry(&lib).args(["image", "verify"]));
        assert_eq!(
            report["problems"].as_array().map(Vec::len),
            Some(0),
            "after SIGKILL at {delay:?}: {report}"
        );
    }
    ok(ferry(&lib).args(["image", "gc"]));
    let report = json(ferry(&lib).args(["image", "verify"]));
    assert_eq!(
        report["problems"].as_array().map(Vec::len),
        Some(0),
        "{report}"
    );
    assert_eq!(
        report["notes"].as_array().map(Vec::len),
        Some(0),
        "gc leaves no debris: {report}"
    );

    // The library still works: capture (reusing surviving chunks) and restore.
    ok(ferry(&lib)
        .arg("capture")
        .arg(&src)
        .args(["--name", "final"]));
    let out = dir.path().join("out.img");
    ok(ferry(&lib).arg("restore").arg("final").arg(&out));
    assert!(
        fs::read(&out).expect("read") == fs::read(&src).expect("read"),
        "restore differs"
    );
}

#[test]
fn a_killed_restore_resumes_without_redoing_its_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lib = dir.path().join("lib");
    let src = dir.path().join("disk.img");
    write_disk_like(&src, 160, 4);
    ok(ferry(&lib).arg("capture").arg(&src).args(["--name", "v1"]));

    let out = dir.path().join("out.img");
    let t = Instant::now();
    let full = json(
        ferry(&lib)
            .arg("restore")
            .arg("v1")
            .arg(&out)
            .arg("--no-seed"),
    );
    let took = t.elapsed();
    let data = full["bytes_written"].as_u64().expect("bytes_written");
    fs::remove_file(&out).expect("rm");

    // Kill a restore part-way; retry with shorter delays until one really
    // stopped before the end (the target then differs from the source).
    let source = fs::read(&src).expect("read");
    let mut delay = took / 2;
    let mut interrupted = false;
    for _ in 0..12 {
        let _ = fs::remove_file(&out);
        let mut child = ferry(&lib)
            .arg("restore")
            .arg("v1")
            .arg(&out)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(delay);
        child.kill().expect("SIGKILL");
        child.wait().expect("wait");
        if fs::read(&out).map(|d| d != source).unwrap_or(false) {
            interrupted = true;
            break;
        }
        delay = delay * 2 / 3;
    }
    assert!(interrupted, "could not interrupt a restore part-way");
    let resumed = json(ferry(&lib).arg("restore").arg("v1").arg(&out));
    assert!(
        fs::read(&out).expect("read") == fs::read(&src).expect("read"),
        "resumed restore differs"
    );
    let written = resumed["bytes_written"].as_u64().expect("bytes_written");
    let seeded = resumed["bytes_seeded"].as_u64().expect("bytes_seeded");
    eprintln!("full restore wrote {data} bytes; the resumed one wrote {written} and found {seeded} in place");
    assert!(
        written + seeded >= data && written < data,
        "nothing was reused: {resumed}"
    );
}

#[test]
fn survey_reports_the_partition_table_and_file_systems() {
    let dir = tempfile::tempdir().expect("tempdir");
    let img = dir.path().join("disk.img");
    ferry_tests::sh(&format!(
        "truncate -s 64M '{0}' && printf 'label: dos\\nstart=2048, size=61440, type=83, bootable\\n' | sfdisk -q '{0}' \
         && mkfs.ext4 -q -F -L survey-me -U 11111111-2222-3333-4444-555555555555 -E offset=1048576 '{0}' 30M",
        img.display()
    ));
    let out = json(ferry(dir.path()).args(["survey", "--disks"]).arg(&img));
    let disk = &out[0];
    assert_eq!(disk["size"], 64 << 20, "{disk}");
    let part = &disk["partitions"][0];
    assert_eq!(part["start"], 1 << 20, "{part}");
    assert_eq!(
        part["filesystem"]["uuid"], "11111111-2222-3333-4444-555555555555",
        "{part}"
    );
    assert_eq!(part["filesystem"]["label"], "survey-me", "{part}");
    let text = ok(ferry(dir.path()).args(["survey", "--disks"]).arg(&img));
    assert!(
        text.contains("ext4") && text.contains("survey-me"),
        "{text}"
    );
    let err = fails(ferry(dir.path()).args(["survey", "--disks", "/nonexistent/disk"]));
    assert!(err.contains("/nonexistent/disk"), "{err}");
}
