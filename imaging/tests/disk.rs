//! The disk survey and used-block maps against real disks.
//!
//! Every disk is built at test time: `truncate` + `sfdisk` for the tables,
//! the distribution's own mkfs tools for the file systems (into a separate
//! image copied into the partition with `dd conv=sparse,notrunc` where the
//! tool cannot write at an offset), loop devices where a block device is
//! needed. The survey is compared with `sfdisk --json`, `blkid -p`,
//! `tune2fs -l` and `fsck.fat -v`. The used-block tests copy only the
//! reported ranges into an otherwise zero image and require `e2fsck -fn` /
//! `fsck.fat -n` to be clean on the copy and every file to read back
//! identical (`debugfs rdump`, `mcopy`, or a read-only mount as root).
//! Damaged inputs (flipped bytes, crafted tables, truncations) must give
//! errors within a timeout, never a panic or a hang.
//!
//! Tests that need root (loop devices, mounts, `pvcreate`, `cryptsetup`)
//! print `SKIPPED <name>: needs root` and return; a missing tool prints
//! `SKIPPED <name>: needs <tool>`.
//!
//! Needs: fdisk (sfdisk), util-linux (blkid, losetup, partx, mount),
//! e2fsprogs, dosfstools, mtools, xfsprogs, btrfs-progs, ntfs-3g,
//! cryptsetup-bin, lvm2.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use imaging::disk::{
    survey_disk, used_ranges, BootCode, DiskLayout, FsType, Partition, PartitionKind,
    PartitionTable, Role,
};

// ---------------------------------------------------------------- helpers

const PACKAGES: &str = "fdisk util-linux e2fsprogs dosfstools mtools xfsprogs btrfs-progs \
                        ntfs-3g cryptsetup-bin lvm2";

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn have(tool: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .any(|d| d.join(tool).is_file())
}

/// Prints the loud skip line and returns true when something is missing.
fn skip(name: &str, root: bool, tools: &[&str]) -> bool {
    if root && !is_root() {
        println!("SKIPPED {name}: needs root");
        eprintln!("SKIPPED {name}: needs root");
        return true;
    }
    for t in tools {
        if !have(t) {
            println!("SKIPPED {name}: needs {t} (apt-get install {PACKAGES})");
            eprintln!("SKIPPED {name}: needs {t}");
            return true;
        }
    }
    false
}

/// Runs a bash script (`set -euo pipefail`, sbin on PATH); returns
/// (success, stdout, stderr).
fn sh_status(script: &str) -> (bool, String, String) {
    let path = format!(
        "/usr/sbin:/sbin:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("set -euo pipefail\n{script}"))
        .env("PATH", path)
        .env("MTOOLS_SKIP_CHECK", "1")
        .env("LC_ALL", "C")
        .output()
        .expect("running bash");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs a bash script; panics with its stderr on failure.
fn sh(script: &str) -> String {
    let (ok, out, err) = sh_status(script);
    assert!(
        ok,
        "script failed:\n{script}\n--- stderr:\n{err}\n--- stdout:\n{out}"
    );
    out
}

fn q(p: &Path) -> String {
    format!("'{}'", p.display())
}

fn tmpdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ferry-disk-")
        .tempdir_in("/var/tmp")
        .expect("creating a temporary directory in /var/tmp")
}

/// Deterministic bytes (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

/// Fills `dir/data` with `n` files of up to `max` bytes in a few
/// directories (some empty, some sparse-looking with zero runs); returns
/// their paths relative to `dir`.
fn fill(dir: &Path, seed: u64, n: usize, max: u64) -> Vec<String> {
    let mut rng = Rng(seed);
    let mut names = Vec::new();
    for i in 0..n {
        let sub = format!("data/d{}", i % 7);
        fs::create_dir_all(dir.join(&sub)).expect("mkdir");
        let name = format!("{sub}/f{i:04}.bin");
        let len = match i % 10 {
            0 => 0,
            1 => rng.below(100),
            _ => rng.below(max),
        } as usize;
        let mut data = rng.bytes(len);
        if i % 5 == 2 && len > 20000 {
            data[4096..16384].fill(0);
        }
        fs::write(dir.join(&name), &data).expect("write file");
        names.push(name);
    }
    names
}

/// Compares every regular file under `a` with the same path under `b`;
/// returns the number compared. `skip` names top-level entries of `b`
/// that `a` lacks (lost+found).
fn compare_trees(a: &Path, b: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let da = a.join(&rel);
        let mut ea: Vec<String> = fs::read_dir(&da)
            .unwrap_or_else(|e| panic!("reading {}: {e}", da.display()))
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        let db = b.join(&rel);
        let mut eb: Vec<String> = fs::read_dir(&db)
            .unwrap_or_else(|e| panic!("reading {}: {e}", db.display()))
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|n| n != "lost+found")
            .collect();
        ea.sort();
        eb.sort();
        assert_eq!(ea, eb, "entries of {}", rel.display());
        for name in ea {
            let r = rel.join(&name);
            let pa = a.join(&r);
            if pa.is_dir() {
                stack.push(r);
            } else {
                let x = fs::read(&pa).expect("read a");
                let y = fs::read(b.join(&r)).expect("read b");
                assert!(
                    x == y,
                    "{} differs ({} vs {} bytes)",
                    r.display(),
                    x.len(),
                    y.len()
                );
                n += 1;
            }
        }
    }
    n
}

/// Copies `[start, start + size)` of `src` to a new sparse file `dst` of
/// `size` bytes, but only the partition-relative `ranges`.
fn copy_ranges(src: &Path, start: u64, size: u64, ranges: &[(u64, u64)], dst: &Path) {
    let s = File::open(src).expect("open source");
    let d = File::create(dst).expect("create copy");
    d.set_len(size).expect("size copy");
    let mut buf = vec![0u8; 1 << 20];
    for &(a, b) in ranges {
        assert!(
            a < b && b <= size,
            "range {a}..{b} outside the {size}-byte partition"
        );
        let mut off = a;
        while off < b {
            let n = ((b - off) as usize).min(buf.len());
            s.read_exact_at(&mut buf[..n], start + off)
                .expect("read range");
            d.write_all_at(&buf[..n], off).expect("write range");
            off += n as u64;
        }
    }
}

fn total(ranges: &[(u64, u64)]) -> u64 {
    ranges.iter().map(|r| r.1 - r.0).sum()
}

fn check_sorted_merged(ranges: &[(u64, u64)]) {
    for w in ranges.windows(2) {
        assert!(w[0].1 < w[1].0, "ranges not sorted and merged: {w:?}");
    }
    for r in ranges {
        assert!(r.0 < r.1, "empty range {r:?}");
    }
}

fn survey(path: &Path) -> DiskLayout {
    survey_disk(path, Path::new("/"))
        .unwrap_or_else(|e| panic!("survey of {} failed: {e}", path.display()))
}

fn part(layout: &DiskLayout, n: u32) -> &Partition {
    layout
        .partitions
        .iter()
        .find(|p| p.number == n)
        .unwrap_or_else(|| panic!("no partition {n} in {layout:#?}"))
}

fn used(path: &Path, p: &Partition) -> Option<Vec<(u64, u64)>> {
    let f = File::open(path).expect("open disk");
    used_ranges(&f, p).unwrap_or_else(|e| panic!("used_ranges of partition {}: {e}", p.number))
}

/// `blkid -p` at `[offset, offset + size)` of `path`, as a map.
fn blkid(path: &Path, offset: u64, size: u64) -> BTreeMap<String, String> {
    let (ok, out, _) = sh_status(&format!(
        "blkid -p -o export -O {offset} -S {size} {}",
        q(path)
    ));
    if !ok {
        return BTreeMap::new();
    }
    out.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.replace("\\ ", " ")))
        .collect()
}

/// Checks the survey's file system of `p` against blkid.
fn check_against_blkid(path: &Path, p: &Partition) {
    let b = blkid(path, p.start, p.size);
    let fs = p.filesystem.as_ref().unwrap_or_else(|| {
        panic!(
            "partition {} has no file system; blkid says {b:?}",
            p.number
        )
    });
    assert_eq!(
        Some(fs.fs_type.blkid_name()),
        b.get("TYPE").map(String::as_str),
        "type of partition {} ({b:?})",
        p.number
    );
    let upper = |s: &Option<String>| s.as_ref().map(|x| x.to_uppercase());
    assert_eq!(
        upper(&fs.uuid),
        b.get("UUID").map(|s| s.to_uppercase()),
        "UUID of partition {} ({b:?})",
        p.number
    );
    assert_eq!(
        fs.label.as_deref(),
        b.get("LABEL").map(String::as_str),
        "label of partition {} ({b:?})",
        p.number
    );
    if let (Some(ours), Some(theirs)) = (&fs.version, b.get("VERSION")) {
        if fs.fs_type != FsType::Ext2 && fs.fs_type != FsType::Ext3 && fs.fs_type != FsType::Ext4 {
            assert_eq!(ours, theirs, "version of partition {} ({b:?})", p.number);
        }
    }
    assert!(fs.problem.is_none(), "problem: {:?}", fs.problem);
}

/// Writes `fsimg` into `img` at byte `offset` (sparse).
fn place(fsimg: &Path, img: &Path, offset: u64) {
    sh(&format!(
        "dd if={} of={} bs=1M seek={offset} oflag=seek_bytes conv=sparse,notrunc status=none",
        q(fsimg),
        q(img)
    ));
}

/// `tune2fs -l` as a map.
fn tune2fs(img: &Path) -> BTreeMap<String, String> {
    sh(&format!("tune2fs -l {}", q(img)))
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn num(m: &BTreeMap<String, String>, k: &str) -> u64 {
    m.get(k)
        .unwrap_or_else(|| panic!("no {k:?} in {m:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("{k}: {e}"))
}

/// Runs `f` on another thread; fails the test on a panic or after
/// `secs` seconds.
fn with_timeout<T: Send + 'static>(
    secs: u64,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        let r = f();
        let _ = tx.send(());
        r
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(()) => h.join().unwrap_or_else(|_| panic!("{what}: panicked")),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: panicked"),
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: still running after {secs} s"),
    }
}

/// True when the running kernel mounts `fs` (loading its module if needed).
fn kernel_has(fs: &str) -> bool {
    sh_status(&format!(
        "grep -qw {fs} /proc/filesystems || {{ modprobe {fs} 2>/dev/null && grep -qw {fs} /proc/filesystems; }}"
    ))
    .0
}

/// A loop device for `img` (root); detached on drop.
struct Loop(String);

impl Loop {
    fn attach(img: &Path, extra: &str) -> Loop {
        let dev = sh(&format!("losetup -f --show {extra} {}", q(img)))
            .trim()
            .to_string();
        Loop(dev)
    }
    fn path(&self) -> &Path {
        Path::new(&self.0)
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = sh_status(&format!(
            "partx -d {0} 2>/dev/null || true; losetup -d {0}",
            self.0
        ));
    }
}

/// A mount point (root); unmounted on drop.
struct Mount(PathBuf);

impl Mount {
    fn new(dev: &Path, at: &Path, opts: &str) -> Mount {
        fs::create_dir_all(at).expect("mkdir mount point");
        sh(&format!("mount -o {opts} {} {}", q(dev), q(at)));
        Mount(at.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = sh_status(&format!("umount {}", q(&self.0)));
    }
}

// ---------------------------------------------------------------- tables

/// An MBR disk: a bootable Linux primary, an extended partition with three
/// logical partitions (ext2, swap, FAT16) and an ESP primary after it.
fn build_mbr_disk(d: &Path) -> PathBuf {
    let img = d.join("mbr.img");
    sh(&format!(
        "truncate -s 200M {img}
         sfdisk -q {img} <<'EOF'
label: dos
label-id: 0x1234abcd
start=2048, size=40960, type=83, bootable
start=43008, size=151552, type=5
start=45056, size=40960, type=83
start=88064, size=40960, type=82
start=131072, size=61440, type=6
start=196608, type=ef
EOF",
        img = q(&img)
    ));
    let fsimg = d.join("fs.tmp");
    let make = |cmd: &str, size: &str, at: u64| {
        let _ = fs::remove_file(&fsimg);
        sh(&format!("truncate -s {size} {f}; {cmd} {f}", f = q(&fsimg)));
        place(&fsimg, &img, at * 512);
    };
    make(
        "mkfs.ext4 -q -F -L mbr-root -U 0b6d0c3e-1f2a-4c5d-8e9f-0a1b2c3d4e5f",
        "20M",
        2048,
    );
    make("mkfs.ext2 -q -F -L logical-five", "20M", 45056);
    make(
        "mkswap -L swap-six -U 3c1b2a09-8f7e-4d6c-9b5a-493827160504",
        "20M",
        88064,
    );
    make("mkfs.vfat -F 16 -n LOGSEVEN -i 1a2b3c4d", "30M", 131072);
    let esp = 1024 * 1024 * 200 / 512 - 196608;
    make(
        "mkfs.vfat -F 12 -s 64 -n ESPMBR -i 0badcafe",
        &format!("{}", esp * 512),
        196608,
    );
    img
}

#[test]
fn mbr_with_extended_and_logical_partitions() {
    if skip(
        "mbr_with_extended_and_logical_partitions",
        false,
        &["sfdisk", "blkid", "mkfs.ext4", "mkswap", "mkfs.vfat"],
    ) {
        return;
    }
    let d = tmpdir();
    let img = build_mbr_disk(d.path());
    let layout = survey(&img);
    let json: serde_json::Value =
        serde_json::from_str(&sh(&format!("sfdisk --json {}", q(&img)))).expect("sfdisk json");
    let pt = &json["partitiontable"];
    assert_eq!(
        layout.table,
        PartitionTable::Mbr {
            disk_signature: "1234abcd".into(),
            sector_size: 512
        }
    );
    assert_eq!(pt["id"], "0x1234abcd");
    let theirs = pt["partitions"].as_array().expect("partitions");
    assert_eq!(layout.partitions.len(), theirs.len(), "{layout:#?}");
    for (ours, t) in layout.partitions.iter().zip(theirs) {
        let node = t["node"].as_str().expect("node");
        let n: u32 = node
            .trim_start_matches(&img.display().to_string())
            .parse()
            .expect("number");
        assert_eq!(ours.number, n);
        assert_eq!(ours.start, t["start"].as_u64().expect("start") * 512);
        assert_eq!(ours.size, t["size"].as_u64().expect("size") * 512);
        let PartitionKind::Mbr {
            type_code,
            bootable,
            logical,
            ..
        } = &ours.kind
        else {
            panic!("not an MBR entry: {ours:?}")
        };
        assert_eq!(
            format!("{type_code:x}"),
            t["type"].as_str().expect("type"),
            "partition {n}"
        );
        assert_eq!(*bootable, t["bootable"].as_bool().unwrap_or(false));
        assert_eq!(*logical, n >= 5);
    }
    let roles: Vec<(u32, Role)> = layout
        .partitions
        .iter()
        .map(|p| (p.number, p.role))
        .collect();
    assert_eq!(
        roles,
        vec![
            (1, Role::Linux),
            (2, Role::Extended),
            (3, Role::Esp),
            (5, Role::Linux),
            (6, Role::Swap),
            (7, Role::Other)
        ]
    );
    for n in [1, 3, 5, 6, 7] {
        check_against_blkid(&img, part(&layout, n));
    }
    assert!(part(&layout, 2).filesystem.is_none());
    assert_eq!(layout.boot.esp, Some(3));
    assert_eq!(layout.boot.bios_boot, None);
    assert_eq!(layout.boot.gap, Some((512, 1 << 20)));
    assert!(!layout.boot.gap_has_data);
    assert_eq!(layout.boot.mbr_boot_code, None);
    // The EBRs: one sector before... wherever sfdisk put them; each is a
    // table range holding the 0x55aa signature and the chain covers 3.
    let f = File::open(&img).expect("open");
    assert_eq!(layout.boot.table_ranges[0], (0, 512));
    let ebrs = &layout.boot.table_ranges[1..];
    assert_eq!(ebrs.len(), 3, "{:?}", layout.boot.table_ranges);
    for &(a, b) in ebrs {
        assert_eq!(b - a, 512);
        let mut s = [0u8; 512];
        f.read_exact_at(&mut s, a).expect("read EBR");
        assert_eq!(s[510..], [0x55, 0xaa], "EBR at {a}");
        assert!(a >= part(&layout, 2).start && b <= part(&layout, 2).start + part(&layout, 2).size);
    }
    // Sizes and use against the tools.
    let p1 = part(&layout, 1);
    let fs1 = p1.filesystem.as_ref().expect("fs");
    assert_eq!(fs1.fs_type, FsType::Ext4);
    assert_eq!(fs1.size, Some(20 << 20));
    let p5 = part(&layout, 5).filesystem.as_ref().expect("fs");
    assert_eq!(p5.fs_type, FsType::Ext2);
    let p6 = part(&layout, 6).filesystem.as_ref().expect("fs");
    assert_eq!(p6.size, Some(20 << 20));
    assert_eq!(p6.used, None);
    assert_eq!(
        part(&layout, 7)
            .filesystem
            .as_ref()
            .and_then(|f| f.version.as_deref()),
        Some("FAT16")
    );
    assert_eq!(
        part(&layout, 3)
            .filesystem
            .as_ref()
            .and_then(|f| f.version.as_deref()),
        Some("FAT12")
    );
    // Swap: only the header page; the extended container: nothing.
    assert_eq!(used(&img, part(&layout, 6)), Some(vec![(0, 4096)]));
    assert_eq!(used(&img, part(&layout, 2)), Some(vec![]));

    // Boot code and a filled gap are noticed.
    let w = fs::OpenOptions::new()
        .write(true)
        .open(&img)
        .expect("open rw");
    w.write_all_at(b"\xeb\x63\x90GRUB loader", 0)
        .expect("write boot code");
    w.write_all_at(b"core.img lives here", 512 * 5)
        .expect("write gap");
    drop(w);
    let layout = survey(&img);
    assert_eq!(layout.boot.mbr_boot_code, Some(BootCode::Grub));
    assert!(layout.boot.gap_has_data);

    // The layout survives JSON.
    let text = serde_json::to_string_pretty(&layout).expect("serialise");
    let back: DiskLayout = serde_json::from_str(&text).expect("deserialise");
    assert_eq!(back, layout);
}

/// A GPT disk: ESP (FAT32), BIOS boot, Linux root (ext4), swap.
fn build_gpt_disk(d: &Path) -> PathBuf {
    let img = d.join("gpt.img");
    sh(&format!(
        "truncate -s 300M {img}
         sfdisk -q {img} <<'EOF'
label: gpt
label-id: 6E0C4B3A-2F1D-4E5C-9B8A-7F6E5D4C3B2A
start=2048, size=139264, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=\"EFI System\", uuid=11111111-2222-3333-4444-555555555555
size=2048, type=21686148-6449-6E6F-744E-656564454649, name=\"bios\", attrs=\"LegacyBIOSBootable\"
size=409600, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=\"root\", attrs=\"RequiredPartition GUID:60\"
size=59392, type=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F, name=\"swap\"
EOF",
        img = q(&img)
    ));
    let fsimg = d.join("fs.tmp");
    let make = |cmd: &str, sectors: u64, at: u64| {
        let _ = fs::remove_file(&fsimg);
        sh(&format!(
            "truncate -s {} {f}; {cmd} {f}",
            sectors * 512,
            f = q(&fsimg)
        ));
        place(&fsimg, &img, at * 512);
    };
    make("mkfs.vfat -F 32 -n EFI -i 12345678", 139264, 2048);
    make(
        "mkfs.ext4 -q -F -L gpt-root -U 7d5e3c1a-9b8f-4e6d-a2c4-b6d8f0e2a4c6",
        409600,
        143360,
    );
    make(
        "mkswap -L gpt-swap -U 5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d",
        59392,
        143360 + 409600,
    );
    img
}

#[test]
fn gpt_with_esp_bios_boot_linux_and_swap() {
    if skip(
        "gpt_with_esp_bios_boot_linux_and_swap",
        false,
        &["sfdisk", "blkid", "mkfs.ext4", "mkswap", "mkfs.vfat"],
    ) {
        return;
    }
    let d = tmpdir();
    let img = build_gpt_disk(d.path());
    let layout = survey(&img);
    let json: serde_json::Value =
        serde_json::from_str(&sh(&format!("sfdisk --json {}", q(&img)))).expect("sfdisk json");
    let pt = &json["partitiontable"];
    let PartitionTable::Gpt {
        disk_guid,
        sector_size,
        first_usable_lba,
        last_usable_lba,
        entry_count,
        primary_valid,
        backup_valid,
    } = &layout.table
    else {
        panic!("not GPT: {layout:#?}")
    };
    assert_eq!(disk_guid.to_uppercase(), pt["id"].as_str().expect("id"));
    assert_eq!(*sector_size, 512);
    assert_eq!(
        *first_usable_lba,
        pt["firstlba"].as_u64().expect("firstlba")
    );
    assert_eq!(*last_usable_lba, pt["lastlba"].as_u64().expect("lastlba"));
    assert_eq!(*entry_count, 128);
    assert!(*primary_valid && *backup_valid);
    let theirs = pt["partitions"].as_array().expect("partitions");
    assert_eq!(layout.partitions.len(), theirs.len());
    for (ours, t) in layout.partitions.iter().zip(theirs) {
        let PartitionKind::Gpt {
            type_guid,
            unique_guid,
            name,
            attributes,
            first_lba,
            last_lba,
        } = &ours.kind
        else {
            panic!("not a GPT entry: {ours:?}")
        };
        assert_eq!(ours.start, t["start"].as_u64().expect("start") * 512);
        assert_eq!(ours.size, t["size"].as_u64().expect("size") * 512);
        assert_eq!(*first_lba * 512, ours.start);
        assert_eq!((*last_lba + 1) * 512, ours.start + ours.size);
        assert_eq!(type_guid.to_uppercase(), t["type"].as_str().expect("type"));
        assert_eq!(
            unique_guid.to_uppercase(),
            t["uuid"].as_str().expect("uuid")
        );
        assert_eq!(name, t["name"].as_str().unwrap_or(""));
        let attrs = t["attrs"].as_str().unwrap_or("");
        assert_eq!(attributes & 1 != 0, attrs.contains("RequiredPartition"));
        assert_eq!(attributes & 4 != 0, attrs.contains("LegacyBIOSBootable"));
        assert_eq!(attributes >> 60 & 1 != 0, attrs.contains("GUID:60"));
    }
    let roles: Vec<Role> = layout.partitions.iter().map(|p| p.role).collect();
    assert_eq!(
        roles,
        vec![Role::Esp, Role::BiosBoot, Role::Linux, Role::Swap]
    );
    for n in [1, 3, 4] {
        check_against_blkid(&img, part(&layout, n));
    }
    assert!(part(&layout, 2).filesystem.is_none());
    assert_eq!(layout.boot.esp, Some(1));
    assert_eq!(layout.boot.bios_boot, Some(2));
    assert_eq!(layout.boot.gap, Some((34 * 512, 1 << 20)));
    let size = 300u64 << 20;
    assert_eq!(
        layout.boot.table_ranges,
        vec![(0, 34 * 512), (size - 33 * 512, size)]
    );
    let esp = part(&layout, 1).filesystem.as_ref().expect("esp fs");
    assert_eq!(esp.version.as_deref(), Some("FAT32"));
    assert!(esp.supported_for_capture());

    // A damaged primary header or entry array: the backup is read.
    let w = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .expect("open rw");
    let mut orig = [0u8; 1];
    for at in [512 + 40, 1024 + 200] {
        w.read_exact_at(&mut orig, at).expect("read");
        w.write_all_at(&[orig[0] ^ 0x55], at).expect("flip");
        let damaged = survey(&img);
        assert!(
            matches!(
                damaged.table,
                PartitionTable::Gpt {
                    primary_valid: false,
                    backup_valid: true,
                    ..
                }
            ),
            "{:?}",
            damaged.table
        );
        assert_eq!(damaged.partitions, layout.partitions);
        w.write_all_at(&orig, at).expect("restore");
    }
    // Both damaged: an error that names the disk.
    w.write_all_at(&[0xff], 512 + 40).expect("flip primary");
    w.write_all_at(&[0xff], size - 512 + 40)
        .expect("flip backup");
    let err = survey_disk(&img, Path::new("/")).expect_err("both headers damaged");
    let msg = err.to_string();
    assert!(msg.contains("gpt.img") && msg.contains("GPT"), "{msg}");
}

// ---------------------------------------------------------------- whole-disk file systems

#[test]
fn whole_disk_filesystems_match_blkid() {
    if skip(
        "whole_disk_filesystems_match_blkid",
        false,
        &[
            "blkid",
            "mkfs.ext4",
            "mkfs.xfs",
            "mkfs.btrfs",
            "mkfs.ntfs",
            "mkswap",
            "mkfs.vfat",
        ],
    ) {
        return;
    }
    let d = tmpdir();
    let cases: &[(&str, &str, FsType, Option<&str>)] = &[
        (
            "ext2",
            "mkfs.ext2 -q -F -L e2 -b 1024 IMG",
            FsType::Ext2,
            None,
        ),
        ("ext3", "mkfs.ext3 -q -F -L e3 IMG", FsType::Ext3, None),
        ("ext4", "mkfs.ext4 -q -F -L e4 IMG", FsType::Ext4, None),
        (
            "ext4nj",
            "mkfs.ext4 -q -F -O ^has_journal IMG",
            FsType::Ext4,
            None,
        ),
        (
            "xfs",
            "mkfs.xfs -q -f -L xfslabel IMG",
            FsType::Xfs,
            Some("5"),
        ),
        (
            "xfs4",
            "mkfs.xfs -q -f -m crc=0 -L old IMG",
            FsType::Xfs,
            Some("4"),
        ),
        (
            "fat12",
            "mkfs.vfat -F 12 -s 128 -n F12 IMG",
            FsType::Vfat,
            Some("FAT12"),
        ),
        (
            "fat16",
            "mkfs.vfat -F 16 -n F16 IMG",
            FsType::Vfat,
            Some("FAT16"),
        ),
        (
            "fat32",
            "mkfs.vfat -F 32 -n F32 IMG",
            FsType::Vfat,
            Some("FAT32"),
        ),
        (
            "fat32nolabel",
            "mkfs.vfat -F 32 IMG",
            FsType::Vfat,
            Some("FAT32"),
        ),
        (
            "swap",
            "mkswap -L sw -U 01234567-89ab-cdef-0123-456789abcdef IMG",
            FsType::Swap,
            Some("1"),
        ),
        ("swapnolabel", "mkswap IMG", FsType::Swap, Some("1")),
        ("btrfs", "mkfs.btrfs -q -f -L bt IMG", FsType::Btrfs, None),
        ("ntfs", "mkfs.ntfs -q -F -f -L nt IMG", FsType::Ntfs, None),
    ];
    for &(name, cmd, ty, version) in cases {
        let img = d.path().join(format!("{name}.img"));
        let size = match name {
            n if n.starts_with("xfs") => "320M",
            "fat12" => "100M",
            _ => "200M",
        };
        sh(&format!(
            "truncate -s {size} {i}; {}",
            cmd.replace("IMG", &q(&img)),
            i = q(&img)
        ));
        let layout = survey(&img);
        assert_eq!(layout.table, PartitionTable::None, "{name}");
        assert_eq!(layout.partitions.len(), 1, "{name}: {layout:#?}");
        let p = &layout.partitions[0];
        assert_eq!((p.number, p.start, p.size), (0, 0, layout.size), "{name}");
        assert_eq!(p.kind, PartitionKind::Whole);
        let fs = p.filesystem.as_ref().expect("file system");
        assert_eq!(fs.fs_type, ty, "{name}");
        if let Some(v) = version {
            assert_eq!(fs.version.as_deref(), Some(v), "{name}");
        }
        check_against_blkid(&img, p);
        assert_eq!(fs.supported_for_capture(), ty.supported_for_capture());
        // Sizes and use where the tools report them.
        match ty {
            FsType::Ext2 | FsType::Ext3 | FsType::Ext4 => {
                let t = tune2fs(&img);
                let bs = num(&t, "Block size");
                assert_eq!(fs.size, Some(num(&t, "Block count") * bs), "{name}");
                assert_eq!(
                    fs.used,
                    Some((num(&t, "Block count") - num(&t, "Free blocks")) * bs),
                    "{name}"
                );
            }
            FsType::Xfs => {
                let out = sh(&format!(
                    "xfs_db -r -c 'sb 0' -c 'p dblocks fdblocks blocksize' {}",
                    q(&img)
                ));
                let v: BTreeMap<&str, u64> = out
                    .lines()
                    .filter_map(|l| l.split_once(" = "))
                    .map(|(k, v)| (k.trim(), v.trim().parse().expect("number")))
                    .collect();
                assert_eq!(fs.size, Some(v["dblocks"] * v["blocksize"]));
                assert_eq!(
                    fs.used,
                    Some((v["dblocks"] - v["fdblocks"]) * v["blocksize"])
                );
                assert_eq!(used(&img, p), None, "xfs has no used map yet");
            }
            FsType::Vfat => {
                let out = sh(&format!("fsck.fat -n -v {} | tail -1", q(&img)));
                // "…: 0 files, 1/8167 clusters"
                let clusters = out
                    .rsplit(", ")
                    .next()
                    .and_then(|s| s.split_whitespace().next())
                    .and_then(|s| s.split_once('/'))
                    .map(|(a, _)| a.parse::<u64>().expect("clusters"))
                    .expect("fsck.fat summary");
                let bs = u64::from(fs.block_size.expect("cluster size"));
                assert_eq!(fs.used, Some(clusters * bs), "{name}: {out}");
            }
            FsType::Btrfs => {
                assert!(fs.used.is_some_and(|u| u > 0 && u < layout.size));
                assert_eq!(used(&img, p), None);
            }
            _ => {}
        }
    }
}

#[test]
fn luks_and_lvm_are_detected() {
    if skip(
        "luks_and_lvm_are_detected",
        true,
        &["cryptsetup", "pvcreate", "pvremove", "blkid", "losetup"],
    ) {
        return;
    }
    let d = tmpdir();
    let key = d.path().join("key");
    fs::write(&key, b"correct horse battery staple").expect("key");
    for (ty, label) in [("luks1", ""), ("luks2", "--label cryptlabel")] {
        let img = d.path().join(format!("{ty}.img"));
        sh(&format!(
            "truncate -s 40M {i}
             cryptsetup luksFormat -q --type {ty} {label} --pbkdf pbkdf2 \
               --pbkdf-force-iterations 1000 --key-file {k} {i}",
            i = q(&img),
            k = q(&key)
        ));
        let layout = survey(&img);
        let p = &layout.partitions[0];
        let fs = p.filesystem.as_ref().expect("luks found");
        assert_eq!(fs.fs_type, FsType::Luks);
        assert_eq!(fs.version.as_deref(), Some(&ty[4..]));
        assert!(!fs.supported_for_capture());
        check_against_blkid(&img, p);
        assert_eq!(used(&img, p), None);
    }
    let img = d.path().join("pv.img");
    sh(&format!("truncate -s 64M {}", q(&img)));
    let dev = Loop::attach(&img, "");
    sh(&format!("pvcreate -q --devices {0} {0} >/dev/null", dev.0));
    let layout = survey(dev.path());
    let p = &layout.partitions[0];
    let fs = p.filesystem.as_ref().expect("pv found");
    assert_eq!(fs.fs_type, FsType::Lvm2Pv);
    assert_eq!(fs.size, Some(64 << 20));
    check_against_blkid(dev.path(), p);
    assert_eq!(layout.logical_sector_size, 512);
    let _ = sh_status(&format!("pvremove -q -y --devices {0} {0}", dev.0));
}

#[test]
fn block_device_with_4k_sectors_and_sysfs_identity() {
    if skip(
        "block_device_with_4k_sectors_and_sysfs_identity",
        true,
        &["losetup", "sfdisk", "partx", "mkfs.ext4", "blkid"],
    ) {
        return;
    }
    let d = tmpdir();
    let img = d.path().join("4k.img");
    sh(&format!("truncate -s 256M {}", q(&img)));
    let dev = Loop::attach(&img, "--sector-size 4096");
    sh(&format!(
        "sfdisk -q {0} <<'EOF'
label: gpt
size=32M, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B
type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=\"data\"
EOF
         partx -a {0} 2>/dev/null || partx -u {0}
         mkfs.vfat -F 16 -S 4096 -s 1 -n ESP4K {0}p1 >/dev/null
         mkfs.ext4 -q -F -L four-k {0}p2",
        dev.0
    ));
    let layout = survey(dev.path());
    assert_eq!(layout.logical_sector_size, 4096);
    assert_eq!(layout.size, 256 << 20);
    let PartitionTable::Gpt { sector_size, .. } = &layout.table else {
        panic!("not GPT: {layout:#?}")
    };
    assert_eq!(*sector_size, 4096);
    assert_eq!(layout.partitions.len(), 2);
    for p in &layout.partitions {
        check_against_blkid(dev.path(), p);
    }
    // The kernel's view of the partitions agrees.
    for p in &layout.partitions {
        let name = format!(
            "{}p{}",
            dev.path().file_name().expect("name").to_string_lossy(),
            p.number
        );
        let start: u64 = fs::read_to_string(format!("/sys/class/block/{name}/start"))
            .expect("sysfs start")
            .trim()
            .parse()
            .expect("start");
        assert_eq!(start * 512, p.start, "sysfs counts 512-byte sectors");
    }
    // The ext4 on 4K sectors: used map, copy, fsck.
    let p2 = part(&layout, 2);
    let ranges = used(dev.path(), p2).expect("ext4 map");
    let copy = d.path().join("p2.copy");
    copy_ranges(dev.path(), p2.start, p2.size, &ranges, &copy);
    sh(&format!("e2fsck -fn {} >/dev/null", q(&copy)));

    // A fixture sysfs root supplies the identity.
    let root = d.path().join("sysroot");
    let name = dev
        .path()
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let dir = root.join("sys/class/block").join(&name);
    fs::create_dir_all(dir.join("device")).expect("fixture dirs");
    fs::create_dir_all(dir.join("queue")).expect("fixture dirs");
    fs::write(dir.join("device/model"), "FERRY DISK 9000  \n").expect("model");
    fs::write(dir.join("device/serial"), "SN-0042\n").expect("serial");
    fs::write(dir.join("wwid"), "eui.0025388b91b2c3d4\n").expect("wwid");
    fs::write(dir.join("queue/logical_block_size"), "4096\n").expect("lbs");
    fs::write(dir.join("queue/physical_block_size"), "4096\n").expect("pbs");
    let fixture = survey_disk(dev.path(), &root).expect("survey with fixture root");
    assert_eq!(fixture.model.as_deref(), Some("FERRY DISK 9000"));
    assert_eq!(fixture.serial.as_deref(), Some("SN-0042"));
    assert_eq!(fixture.wwn.as_deref(), Some("eui.0025388b91b2c3d4"));
    assert_eq!(
        (fixture.logical_sector_size, fixture.physical_sector_size),
        (4096, 4096)
    );
    assert_eq!(fixture.partitions, layout.partitions);
    // An image file of the same disk is probed with 4096 too.
    drop(dev);
    let from_file = survey(&img);
    assert_eq!(from_file.partitions, layout.partitions);
    assert_eq!(from_file.logical_sector_size, 512, "image files report 512");
}

// ---------------------------------------------------------------- used blocks: ext

struct ExtCase {
    name: &'static str,
    mkfs: &'static str,
    size: &'static str,
    files: usize,
    max: u64,
    /// Whether mke2fs leaves BLOCK_UNINIT groups (`None`: either).
    expect_block_uninit: Option<bool>,
}

/// Builds an ext file system from a staging tree, punches holes by
/// deleting files with debugfs, maps it, copies only the map and checks
/// the copy with e2fsck and debugfs.
fn ext_used_case(c: &ExtCase) {
    let t0 = Instant::now();
    let d = tmpdir();
    let stage = d.path().join("stage");
    let names = fill(&stage, 0xfeed ^ c.files as u64, c.files, c.max);
    let img = d.path().join("fs.img");
    sh(&format!(
        "truncate -s {} {i}; {} -q -F -d {s} {i}",
        c.size,
        c.mkfs,
        i = q(&img),
        s = q(&stage)
    ));
    // Holes: delete every third file in the image and in the staging tree.
    let mut script = String::new();
    for n in names.iter().step_by(3) {
        script.push_str(&format!("rm /{n}\n"));
        fs::remove_file(stage.join(n)).expect("remove staged");
    }
    fs::write(d.path().join("rm.cmds"), script).expect("debugfs script");
    sh(&format!(
        "debugfs -w -f {} {} >/dev/null 2>&1",
        q(&d.path().join("rm.cmds")),
        q(&img)
    ));
    sh(&format!(
        "e2fsck -fy {i} >/dev/null 2>&1 || true; e2fsck -fn {i} >/dev/null",
        i = q(&img)
    ));
    let uninit: usize = sh(&format!(
        "dumpe2fs {} 2>/dev/null | grep -c BLOCK_UNINIT || true",
        q(&img)
    ))
    .trim()
    .parse()
    .expect("count");
    if let Some(want) = c.expect_block_uninit {
        assert_eq!(uninit > 0, want, "{}: {uninit} BLOCK_UNINIT groups", c.name);
    }

    let layout = survey(&img);
    let p = &layout.partitions[0];
    let ranges = used(&img, p).expect("an ext map");
    check_sorted_merged(&ranges);
    let t = tune2fs(&img);
    let bs = num(&t, "Block size");
    let sb_used = (num(&t, "Block count") - num(&t, "Free blocks")) * bs;
    let ours = total(&ranges);
    // The map is exactly what the superblock counts as used: every bit of
    // every initialised bitmap, plus the metadata of BLOCK_UNINIT groups,
    // which the free counts exclude too.
    assert_eq!(ours, sb_used, "{}: map vs superblock", c.name);
    assert!(
        ours < layout.size / 2,
        "{}: the map should skip free space",
        c.name
    );

    let copy = d.path().join("copy.img");
    copy_ranges(&img, 0, p.size, &ranges, &copy);
    let (ok, out, err) = sh_status(&format!("e2fsck -fn {}", q(&copy)));
    assert!(ok, "{}: e2fsck on the copy:\n{out}\n{err}", c.name);
    let out_dir = d.path().join("out");
    fs::create_dir_all(&out_dir).expect("mkdir out");
    sh(&format!(
        "debugfs -R 'rdump /data {}' {} >/dev/null 2>&1",
        q(&out_dir),
        q(&copy)
    ));
    let n = compare_trees(&stage.join("data"), &out_dir.join("data"));
    assert!(n > 0);
    println!(
        "{}: {n} files identical; map {} KiB (superblock: {} KiB used) of {} MiB ({} ranges), \
         {uninit} BLOCK_UNINIT groups, {:.1}s",
        c.name,
        ours >> 10,
        sb_used >> 10,
        layout.size >> 20,
        ranges.len(),
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn ext4_used_blocks_flex_bg_and_block_uninit() {
    if skip(
        "ext4_used_blocks_flex_bg_and_block_uninit",
        false,
        &["mkfs.ext4", "debugfs", "e2fsck"],
    ) {
        return;
    }
    ext_used_case(&ExtCase {
        name: "ext4 flex_bg + BLOCK_UNINIT (2 GiB, lazy init)",
        mkfs: "mkfs.ext4 -E lazy_itable_init=1",
        size: "2G",
        files: 120,
        max: 1 << 20,
        expect_block_uninit: Some(true),
    });
}

#[test]
fn ext4_used_blocks_without_flex_bg() {
    if skip(
        "ext4_used_blocks_without_flex_bg",
        false,
        &["mkfs.ext4", "debugfs", "e2fsck"],
    ) {
        return;
    }
    ext_used_case(&ExtCase {
        name: "ext4 ^flex_bg",
        mkfs: "mkfs.ext4 -O ^flex_bg",
        size: "1G",
        files: 120,
        max: 1 << 20,
        expect_block_uninit: Some(true),
    });
}

#[test]
fn ext4_used_blocks_uninit_bg_crc16() {
    if skip(
        "ext4_used_blocks_uninit_bg_crc16",
        false,
        &["mkfs.ext4", "debugfs", "e2fsck"],
    ) {
        return;
    }
    ext_used_case(&ExtCase {
        name: "ext4 uninit_bg (crc16 descriptors), 32-bit",
        mkfs: "mkfs.ext4 -O ^metadata_csum,^64bit,uninit_bg",
        size: "1G",
        files: 80,
        max: 1 << 20,
        expect_block_uninit: Some(true),
    });
}

#[test]
fn ext4_used_blocks_1k_blocks_meta_bg() {
    if skip(
        "ext4_used_blocks_1k_blocks_meta_bg",
        false,
        &["mkfs.ext4", "debugfs", "e2fsck"],
    ) {
        return;
    }
    ext_used_case(&ExtCase {
        name: "ext4 1 KiB blocks, meta_bg",
        mkfs: "mkfs.ext4 -b 1024 -O meta_bg,^resize_inode",
        size: "300M",
        files: 80,
        max: 256 << 10,
        expect_block_uninit: Some(true),
    });
}

#[test]
fn ext4_used_blocks_bigalloc_and_sparse_super2() {
    if skip(
        "ext4_used_blocks_bigalloc_and_sparse_super2",
        false,
        &["mkfs.ext4", "debugfs", "e2fsck"],
    ) {
        return;
    }
    ext_used_case(&ExtCase {
        name: "ext4 bigalloc 16K clusters",
        mkfs: "mkfs.ext4 -O bigalloc -C 16384",
        size: "1G",
        files: 60,
        max: 1 << 20,
        expect_block_uninit: None,
    });
    ext_used_case(&ExtCase {
        name: "ext4 sparse_super2",
        mkfs: "mkfs.ext4 -O sparse_super2",
        size: "1G",
        files: 60,
        max: 1 << 20,
        expect_block_uninit: Some(true),
    });
}

#[test]
fn ext2_used_blocks() {
    if skip(
        "ext2_used_blocks",
        false,
        &["mkfs.ext2", "debugfs", "e2fsck"],
    ) {
        return;
    }
    ext_used_case(&ExtCase {
        name: "ext2",
        mkfs: "mkfs.ext2",
        size: "512M",
        files: 100,
        max: 1 << 20,
        expect_block_uninit: Some(false),
    });
}

#[test]
fn ext4_used_blocks_written_by_the_kernel() {
    let name = "ext4_used_blocks_written_by_the_kernel";
    if skip(
        name,
        true,
        &["mkfs.ext4", "losetup", "mount", "e2fsck", "sfdisk"],
    ) {
        return;
    }
    if !kernel_has("ext4") {
        println!("SKIPPED {name}: the kernel has no ext4 support");
        eprintln!("SKIPPED {name}: the kernel has no ext4 support");
        return;
    }
    // In a GPT partition, so the offsets are exercised too.
    let d = tmpdir();
    let img = d.path().join("disk.img");
    sh(&format!(
        "truncate -s 2100M {0}
         sfdisk -q {0} <<'EOF'
label: gpt
start=2048, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4
EOF",
        q(&img)
    ));
    let dev = Loop::attach(&img, "-P");
    sh(&format!("partx -a {0} 2>/dev/null || partx -u {0}", dev.0));
    let p1 = PathBuf::from(format!("{}p1", dev.0));
    sh(&format!("mkfs.ext4 -q -F -L kernel {}", q(&p1)));
    let stage = d.path().join("stage");
    let names = fill(&stage, 77, 150, 2 << 20);
    {
        let m = Mount::new(&p1, &d.path().join("mnt"), "rw");
        sh(&format!("cp -a {}/data {}/", q(&stage), q(&m.0)));
        sh("sync");
        for n in names.iter().step_by(4) {
            fs::remove_file(m.0.join(n)).expect("rm");
            fs::remove_file(stage.join(n)).expect("rm staged");
        }
        // New files after the deletes reuse some freed blocks.
        let mut rng = Rng(99);
        for i in 0..20 {
            let p = format!("data/late{i}.bin");
            let len = rng.below(3 << 20) as usize;
            let data = rng.bytes(len);
            fs::write(m.0.join(&p), &data).expect("write late");
            fs::write(stage.join(&p), &data).expect("write staged");
        }
    }
    let layout = survey(dev.path());
    let p = part(&layout, 1);
    check_against_blkid(dev.path(), p);
    let ranges = used(dev.path(), p).expect("ext4 map");
    drop(dev);
    check_sorted_merged(&ranges);
    let copy = d.path().join("copy.img");
    copy_ranges(&img, p.start, p.size, &ranges, &copy);
    let (ok, out, err) = sh_status(&format!("e2fsck -fn {}", q(&copy)));
    assert!(ok, "e2fsck on the copy:\n{out}\n{err}");
    let cdev = Loop::attach(&copy, "-r");
    let m = Mount::new(cdev.path(), &d.path().join("mnt2"), "ro,noload");
    let n = compare_trees(&stage.join("data"), &m.0.join("data"));
    let fs = p.filesystem.as_ref().expect("fs");
    let ours = total(&ranges);
    let sb_used = fs.used.expect("used");
    assert_eq!(ours, sb_used, "map vs superblock");
    println!("{name}: {n} files identical, map {} MiB", ours >> 20);
}

// ---------------------------------------------------------------- used blocks: vfat

fn vfat_used_case(name: &str, mkfs: &str, size: &str, files: usize, max: u64) {
    let d = tmpdir();
    let stage = d.path().join("stage");
    let names = fill(&stage, files as u64 * 31, files, max);
    let img = d.path().join("fat.img");
    sh(&format!(
        "truncate -s {size} {i}; {mkfs} {i} >/dev/null
         mcopy -s -i {i} {s}/data ::/",
        i = q(&img),
        s = q(&stage)
    ));
    let mut dels = String::new();
    for n in names.iter().step_by(3) {
        dels.push_str(&format!(" ::/{n}"));
        fs::remove_file(stage.join(n)).expect("rm staged");
    }
    sh(&format!("mdel -i {}{dels}", q(&img)));
    // A late write after deleting fills some holes and fragments files.
    let mut rng = Rng(5);
    let late = stage.join("data/late.bin");
    fs::write(&late, rng.bytes((max * 2) as usize)).expect("late");
    sh(&format!(
        "mcopy -i {} {} ::/data/late.bin",
        q(&img),
        q(&late)
    ));
    sh(&format!("fsck.fat -n {} >/dev/null", q(&img)));

    let layout = survey(&img);
    let p = &layout.partitions[0];
    let fsinfo = p.filesystem.as_ref().expect("vfat");
    let ranges = used(&img, p).expect("a FAT map");
    check_sorted_merged(&ranges);
    let copy = d.path().join("copy.img");
    copy_ranges(&img, 0, p.size, &ranges, &copy);
    let (ok, out, err) = sh_status(&format!("fsck.fat -n -v {}", q(&copy)));
    assert!(ok, "{name}: fsck.fat on the copy:\n{out}\n{err}");
    let summary = out.lines().last().unwrap_or_default().to_string();
    let out_dir = d.path().join("out");
    fs::create_dir_all(&out_dir).expect("mkdir out");
    sh(&format!(
        "mcopy -s -n -i {} ::/data {}/",
        q(&copy),
        q(&out_dir)
    ));
    let n = compare_trees(&stage.join("data"), &out_dir.join("data"));
    // Used = metadata + allocated clusters.
    let cluster = u64::from(fsinfo.block_size.expect("cluster size"));
    let mut bs = [0u8; 512];
    File::open(&img)
        .expect("open")
        .read_exact_at(&mut bs, 0)
        .expect("boot sector");
    let le16 = |at: usize| u64::from(u16::from_le_bytes([bs[at], bs[at + 1]]));
    let fat_size = match le16(22) {
        0 => u64::from(u32::from_le_bytes([bs[36], bs[37], bs[38], bs[39]])),
        n => n,
    };
    let meta = (le16(14) + u64::from(bs[16]) * fat_size) * le16(11)
        + (le16(17) * 32).div_ceil(le16(11)) * le16(11);
    assert_eq!(ranges[0].0, 0);
    assert!(ranges[0].1 >= meta);
    let data = total(&ranges) - meta;
    assert_eq!(data % cluster, 0);
    let (alloc, _) = summary
        .rsplit(", ")
        .next()
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.split_once('/'))
        .unwrap_or_else(|| panic!("fsck.fat summary {summary:?}"));
    assert_eq!(
        data / cluster,
        alloc.parse::<u64>().expect("clusters"),
        "{name}: {summary}"
    );
    println!(
        "{name}: {n} files identical; map {} KiB ({} ranges) of {size}",
        total(&ranges) >> 10,
        ranges.len()
    );
}

#[test]
fn vfat_used_clusters() {
    if skip(
        "vfat_used_clusters",
        false,
        &["mkfs.vfat", "mcopy", "mdel", "fsck.fat"],
    ) {
        return;
    }
    vfat_used_case("FAT32", "mkfs.vfat -F 32 -n DATA32", "300M", 90, 1 << 20);
    vfat_used_case("FAT16", "mkfs.vfat -F 16 -n DATA16", "100M", 60, 512 << 10);
    vfat_used_case(
        "FAT12",
        "mkfs.vfat -F 12 -s 8 -n DATA12",
        "12M",
        30,
        128 << 10,
    );
}

#[test]
fn vfat_used_clusters_written_by_the_kernel() {
    let name = "vfat_used_clusters_written_by_the_kernel";
    if skip(name, true, &["mkfs.vfat", "losetup", "mount", "fsck.fat"]) {
        return;
    }
    if !kernel_has("vfat") {
        println!("SKIPPED {name}: the kernel has no vfat support (modprobe vfat failed)");
        eprintln!("SKIPPED {name}: the kernel has no vfat support");
        return;
    }
    let d = tmpdir();
    let img = d.path().join("fat.img");
    sh(&format!(
        "truncate -s 256M {0}; mkfs.vfat -F 32 -n KFAT {0} >/dev/null",
        q(&img)
    ));
    let stage = d.path().join("stage");
    let names = fill(&stage, 4242, 100, 1 << 20);
    {
        let dev = Loop::attach(&img, "");
        let m = Mount::new(dev.path(), &d.path().join("mnt"), "rw");
        sh(&format!("cp -r {}/data {}/", q(&stage), q(&m.0)));
        sh("sync");
        for n in names.iter().step_by(3) {
            fs::remove_file(m.0.join(n)).expect("rm");
            fs::remove_file(stage.join(n)).expect("rm staged");
        }
        drop(m);
        drop(dev);
    }
    let layout = survey(&img);
    let p = &layout.partitions[0];
    let ranges = used(&img, p).expect("FAT map");
    let copy = d.path().join("copy.img");
    copy_ranges(&img, 0, p.size, &ranges, &copy);
    let (ok, out, err) = sh_status(&format!("fsck.fat -n {}", q(&copy)));
    assert!(ok, "fsck.fat on the copy:\n{out}\n{err}");
    let dev = Loop::attach(&copy, "-r");
    let m = Mount::new(dev.path(), &d.path().join("mnt2"), "ro");
    let n = compare_trees(&stage.join("data"), &m.0.join("data"));
    println!(
        "{name}: {n} files identical, map {} MiB",
        total(&ranges) >> 20
    );
}

// ---------------------------------------------------------------- damaged inputs

/// Surveys `img` and maps every partition; `Err` text on the first error.
fn exercise(img: PathBuf) -> Result<usize, String> {
    let layout = survey_disk(&img, Path::new("/")).map_err(|e| e.to_string())?;
    let f = File::open(&img).map_err(|e| e.to_string())?;
    let mut n = 0;
    for p in &layout.partitions {
        if let Some(r) = used_ranges(&f, p).map_err(|e| e.to_string())? {
            for w in r.windows(2) {
                assert!(w[0].1 < w[1].0, "unsorted map {w:?}");
            }
            if let Some(last) = r.last() {
                assert!(
                    last.1 <= p.size,
                    "map beyond partition {}: {last:?}",
                    p.number
                );
            }
            n += r.len();
        }
    }
    Ok(n)
}

/// Builds a 64 MiB GPT disk (ext4 with files, FAT32, FAT16) for mutation.
fn build_small_gpt(d: &Path) -> PathBuf {
    let img = d.join("small.img");
    sh(&format!(
        "truncate -s 100M {img}
         sfdisk -q {img} <<'EOF'
label: gpt
start=2048, size=65536, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4
size=73728, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B
size=40960, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7
EOF",
        img = q(&img)
    ));
    let stage = d.join("stage");
    fill(&stage, 1, 40, 256 << 10);
    let fsimg = d.join("fs.tmp");
    sh(&format!(
        "truncate -s 32M {f}; mkfs.ext4 -q -F -d {s} {f}",
        f = q(&fsimg),
        s = q(&stage)
    ));
    place(&fsimg, &img, 2048 * 512);
    fs::remove_file(&fsimg).expect("rm");
    sh(&format!(
        "truncate -s 36M {f}; mkfs.vfat -F 32 {f} >/dev/null; mcopy -s -i {f} {s}/data ::/",
        f = q(&fsimg),
        s = q(&stage)
    ));
    place(&fsimg, &img, (2048 + 65536) * 512);
    fs::remove_file(&fsimg).expect("rm");
    sh(&format!(
        "truncate -s 20M {f}; mkfs.vfat -F 16 {f} >/dev/null; mcopy -s -i {f} {s}/data/d1 ::/",
        f = q(&fsimg),
        s = q(&stage)
    ));
    place(&fsimg, &img, (2048 + 65536 + 73728) * 512);
    img
}

#[test]
fn damaged_tables_and_superblocks_fail_cleanly() {
    if skip(
        "damaged_tables_and_superblocks_fail_cleanly",
        false,
        &["sfdisk", "mkfs.ext4", "mkfs.vfat", "mcopy", "mkswap"],
    ) {
        return;
    }
    let t0 = Instant::now();
    let d = tmpdir();
    let gpt_img = build_small_gpt(d.path());
    let mbr_img = build_mbr_disk(d.path());
    let baseline = exercise(gpt_img.clone()).expect("pristine GPT disk maps");
    assert!(baseline > 0);
    exercise(mbr_img.clone()).expect("pristine MBR disk maps");

    // Regions worth hitting: (disk, start, len).
    let ext = 2048 * 512;
    let fat32 = (2048 + 65536) * 512;
    let fat16 = (2048 + 65536 + 73728) * 512;
    let size = 100u64 << 20;
    let gpt_regions: Vec<(u64, u64)> = vec![
        (0, 512),                  // protective MBR
        (512, 92),                 // GPT header
        (1024, 16384),             // GPT entries
        (size - 512, 92),          // backup header
        (ext + 1024, 1024),        // ext4 superblock
        (ext + 4096, 4096),        // ext4 descriptors
        (ext + 8192, 1 << 20),     // bitmaps, inode tables (flex_bg)
        (fat32, 512),              // FAT32 boot sector
        (fat32 + 512, 512),        // FSInfo
        (fat32 + 32 * 512, 65536), // FAT
        (fat16, 512),              // FAT16 boot sector
        (fat16 + 512, 8192),       // FAT16 FAT
    ];
    let mbr_regions: Vec<(u64, u64)> = vec![
        (0, 512),
        (43008 * 512, 512),
        (45056 * 512 - 4096, 4096), // around the second EBR
        (45056 * 512 + 1024, 1024),
        (88064 * 512 + 1024, 64),
        (131072 * 512, 512),
        (196608 * 512, 512),
    ];
    let mut rng = Rng(0xdead_beef);
    let mut outcomes = BTreeMap::<&str, usize>::new();
    for (img, regions, runs) in [(&gpt_img, &gpt_regions, 400), (&mbr_img, &mbr_regions, 200)] {
        let w = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(img)
            .expect("open rw");
        for i in 0..runs {
            let (start, len) = regions[rng.below(regions.len() as u64) as usize];
            let n = 1 + rng.below(4) as usize;
            let at = start + rng.below(len.saturating_sub(n as u64).max(1));
            let mut orig = vec![0u8; n];
            w.read_exact_at(&mut orig, at).expect("read");
            let new: Vec<u8> = match i % 3 {
                0 => orig
                    .iter()
                    .map(|b| b ^ (1 + rng.below(255) as u8))
                    .collect(),
                1 => vec![0xff; n],
                _ => rng.bytes(n),
            };
            w.write_all_at(&new, at).expect("mutate");
            let p = img.to_path_buf();
            let r = with_timeout(
                60,
                &format!("{} mutated at {at} ({n} bytes)", img.display()),
                move || exercise(p),
            );
            *outcomes
                .entry(if r.is_ok() { "ok" } else { "error" })
                .or_default() += 1;
            w.write_all_at(&orig, at).expect("restore");
        }
    }

    // Sealed damage: ext superblock and descriptor fields changed and their
    // checksums recomputed, so the geometry and location checks (not just
    // the checksums) are what must catch it.
    let seal = ExtSeal::read(&gpt_img, ext);
    {
        let w = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&gpt_img)
            .expect("open rw");
        let mut sb = [0u8; 1024];
        w.read_exact_at(&mut sb, ext + 1024).expect("read sb");
        let mut gdt = vec![0u8; seal.groups * seal.desc_size];
        w.read_exact_at(&mut gdt, seal.gdt_at).expect("read gdt");
        for i in 0..300 {
            let (start, len) = if i % 2 == 0 {
                (ext + 1024, 0x178) // the superblock fields up to s_log_groups_per_flex
            } else {
                (seal.gdt_at, gdt.len() as u64)
            };
            let n = [1usize, 2, 4][rng.below(3) as usize];
            let at = start + rng.below(len - n as u64);
            let new = match i % 5 {
                0 => vec![0xff; n],
                1 => vec![0; n],
                _ => rng.bytes(n),
            };
            w.write_all_at(&new, at).expect("mutate");
            seal.reseal(&w);
            let p = gpt_img.clone();
            let r = with_timeout(60, &format!("sealed ext damage at {at}"), move || {
                exercise(p)
            });
            *outcomes
                .entry(if r.is_ok() {
                    "sealed ok"
                } else {
                    "sealed error"
                })
                .or_default() += 1;
            w.write_all_at(&sb, ext + 1024).expect("restore sb");
            w.write_all_at(&gdt, seal.gdt_at).expect("restore gdt");
        }
        exercise(gpt_img.clone()).expect("restored image maps again");
    }

    // Crafted: a GPT header with a valid CRC and absurd counts or sizes.
    let crafted = d.path().join("crafted.img");
    for (field, value) in [(80usize, u32::MAX), (84, 256), (84, 0), (72, 0xffff_fff0)] {
        fs::copy(&gpt_img, &crafted).expect("copy");
        let w = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&crafted)
            .expect("open");
        for hdr in [512u64, size - 512] {
            let mut h = [0u8; 92];
            w.read_exact_at(&mut h, hdr).expect("read header");
            h[field..field + 4].copy_from_slice(&value.to_le_bytes());
            if field == 72 {
                h[76..80].copy_from_slice(&0u32.to_le_bytes());
            }
            h[16..20].fill(0);
            let crc = crc32(&h);
            h[16..20].copy_from_slice(&crc.to_le_bytes());
            w.write_all_at(&h, hdr).expect("write header");
        }
        let p = crafted.clone();
        let r = with_timeout(
            60,
            &format!("GPT header field {field} = {value:#x}"),
            move || exercise(p),
        );
        assert!(r.is_err(), "field {field} = {value:#x} was accepted");
    }
    // Crafted: an EBR chain that loops back, and one that points past 2^32.
    for (link, what) in [(2048u32, "backwards"), (u32::MAX - 5, "far")] {
        fs::copy(&mbr_img, &crafted).expect("copy");
        let w = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&crafted)
            .expect("open");
        // The last EBR's link entry (second entry) gets a start.
        let layout = survey(&mbr_img);
        let last_ebr = layout.boot.table_ranges.last().expect("EBR").0;
        w.write_all_at(&[0x05], last_ebr + 462 + 4).expect("type");
        w.write_all_at(&link.to_le_bytes(), last_ebr + 462 + 8)
            .expect("start");
        w.write_all_at(&100u32.to_le_bytes(), last_ebr + 462 + 12)
            .expect("size");
        let p = crafted.clone();
        let r = with_timeout(60, &format!("EBR chain {what}"), move || exercise(p));
        assert!(r.is_err(), "EBR chain {what} was accepted");
    }
    // Crafted: a logical partition whose start overflows 32 bits.
    fs::copy(&mbr_img, &crafted).expect("copy");
    {
        let layout = survey(&mbr_img);
        let first_ebr = layout.boot.table_ranges[1].0;
        let w = fs::OpenOptions::new()
            .write(true)
            .open(&crafted)
            .expect("open");
        w.write_all_at(&(u32::MAX - 10).to_le_bytes(), first_ebr + 446 + 8)
            .expect("start");
    }
    let p = crafted.clone();
    assert!(with_timeout(60, "logical start overflow", move || exercise(p)).is_err());
    // Crafted: an unused logical entry (type 0) whose start still overflows
    // when mbrman adds it, and a typed primary entry at sector 0 with no
    // sectors (mbrman's alignment search would divide an empty range).
    fs::copy(&mbr_img, &crafted).expect("copy");
    {
        let layout = survey(&mbr_img);
        let first_ebr = layout.boot.table_ranges[1].0;
        let w = fs::OpenOptions::new()
            .write(true)
            .open(&crafted)
            .expect("open");
        w.write_all_at(&[0u8], first_ebr + 446 + 4).expect("type");
        w.write_all_at(&(u32::MAX - 10).to_le_bytes(), first_ebr + 446 + 8)
            .expect("start");
    }
    let p = crafted.clone();
    assert!(with_timeout(60, "unused logical overflow", move || exercise(p)).is_err());
    fs::copy(&mbr_img, &crafted).expect("copy");
    {
        let w = fs::OpenOptions::new()
            .write(true)
            .open(&crafted)
            .expect("open");
        // Entry 4 (unused in this disk): type 0x83, start 0, 0 sectors.
        w.write_all_at(&[0, 0, 0, 0, 0x83, 0, 0, 0], 446 + 48)
            .expect("entry 4");
        w.write_all_at(&[0u8; 8], 446 + 48 + 8)
            .expect("entry 4 lba");
    }
    let p = crafted.clone();
    assert!(with_timeout(60, "typed entry at sector 0", move || exercise(p)).is_err());
    // A stale GPT backup header on a disk relabelled as MBR: still MBR.
    fs::copy(&mbr_img, &crafted).expect("copy");
    {
        let gpt_layout = survey(&gpt_img);
        assert!(matches!(gpt_layout.table, PartitionTable::Gpt { .. }));
        let g = File::open(&gpt_img).expect("open");
        let mbr_len = fs::metadata(&mbr_img).expect("meta").len();
        let mut tail = vec![0u8; 33 * 512];
        g.read_exact_at(&mut tail, size - 33 * 512)
            .expect("read backup");
        // Only the header: its entries pointer is off this disk's end, so
        // it is invalid anyway; what matters is that it is not looked at.
        let w = fs::OpenOptions::new()
            .write(true)
            .open(&crafted)
            .expect("open");
        w.write_all_at(&tail[32 * 512..], mbr_len - 512)
            .expect("write stale header");
    }
    let stale = survey(&crafted);
    assert!(
        matches!(stale.table, PartitionTable::Mbr { .. }),
        "{:?}",
        stale.table
    );

    // Truncated images: every cut gives a result or an error, no panic.
    for img in [&gpt_img, &mbr_img] {
        let len = fs::metadata(img).expect("meta").len();
        for cut in [
            0,
            100,
            511,
            512,
            1000,
            17408,
            1 << 20,
            (1 << 20) + 2000,
            ext + 5000,
            len / 3,
            len / 2,
            len - 512,
            len - 1,
        ] {
            fs::copy(img, &crafted).expect("copy");
            File::options()
                .write(true)
                .open(&crafted)
                .expect("open")
                .set_len(cut)
                .expect("truncate");
            let p = crafted.clone();
            let r = with_timeout(60, &format!("{} cut at {cut}", img.display()), move || {
                exercise(p)
            });
            *outcomes
                .entry(if r.is_ok() { "ok" } else { "error" })
                .or_default() += 1;
        }
    }
    println!(
        "damaged inputs: {outcomes:?} in {:.1}s",
        t0.elapsed().as_secs_f64()
    );
}

/// Where an ext4 (metadata_csum) file system's checksummed metadata is,
/// to re-seal it after a mutation.
struct ExtSeal {
    sb_at: u64,
    gdt_at: u64,
    desc_size: usize,
    groups: usize,
    seed: u32,
}

impl ExtSeal {
    fn read(img: &Path, start: u64) -> ExtSeal {
        let f = File::open(img).expect("open");
        let mut sb = [0u8; 1024];
        f.read_exact_at(&mut sb, start + 1024).expect("read sb");
        let le32 = |at: usize| u32::from_le_bytes([sb[at], sb[at + 1], sb[at + 2], sb[at + 3]]);
        let bs = 1024u64 << le32(0x18);
        let blocks = u64::from(le32(4));
        let first = u64::from(le32(0x14));
        let groups = (blocks - first).div_ceil(u64::from(le32(0x20))) as usize;
        let desc_size = if le32(0x60) & 0x80 != 0 {
            usize::from(u16::from_le_bytes([sb[0xfe], sb[0xff]]))
        } else {
            32
        };
        assert!(le32(0x64) & 0x400 != 0, "metadata_csum expected");
        ExtSeal {
            sb_at: start + 1024,
            gdt_at: start + (1024 / bs + 1) * bs,
            desc_size,
            groups,
            seed: crc32c_raw(!0, &sb[0x68..0x78]),
        }
    }

    fn reseal(&self, w: &File) {
        for g in 0..self.groups {
            let at = self.gdt_at + (g * self.desc_size) as u64;
            let mut d = vec![0u8; self.desc_size];
            w.read_exact_at(&mut d, at).expect("read desc");
            let mut c = crc32c_raw(self.seed, &(g as u32).to_le_bytes());
            c = crc32c_raw(c, &d[..0x1e]);
            c = crc32c_raw(c, &[0, 0]);
            c = crc32c_raw(c, &d[0x20..]);
            w.write_all_at(&(c as u16).to_le_bytes(), at + 0x1e)
                .expect("write desc csum");
        }
        let mut sb = [0u8; 1024];
        w.read_exact_at(&mut sb, self.sb_at).expect("read sb");
        let c = crc32c_raw(!0, &sb[..0x3fc]);
        w.write_all_at(&c.to_le_bytes(), self.sb_at + 0x3fc)
            .expect("write sb csum");
    }
}

/// Standard CRC-32, for crafting headers.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn ext_damage_is_reported_by_used_ranges() {
    if skip(
        "ext_damage_is_reported_by_used_ranges",
        false,
        &["mkfs.ext4"],
    ) {
        return;
    }
    let d = tmpdir();
    let img = d.path().join("e.img");
    sh(&format!(
        "truncate -s 256M {0}; mkfs.ext4 -q -F {0}",
        q(&img)
    ));
    let layout = survey(&img);
    let p = layout.partitions[0].clone();
    let w = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .expect("open");
    let bs = num(&tune2fs(&img), "Block size");
    let gdt = if bs == 1024 { 2048 } else { bs };
    // (offset, bytes, expected words in the message, recompute the
    // superblock checksum so the geometry checks are reached)
    let cases: Vec<(u64, Vec<u8>, &str, bool)> = vec![
        (
            1024 + 0x20,
            0xffff_ffffu32.to_le_bytes().to_vec(),
            "blocks per group",
            true,
        ),
        (
            1024 + 0x4,
            0x00ff_ffffu32.to_le_bytes().to_vec(),
            "do not fit",
            true,
        ),
        (1024 + 0x18, 9u32.to_le_bytes().to_vec(), "block size", true),
        (1024 + 0x28, 1u32.to_le_bytes().to_vec(), "inodes", true),
        (1024 + 0x62, vec![0x40], "unknown incompatible", true),
        (1024 + 0x200, vec![0x5a], "checksum", false),
        (gdt + 3, vec![0x7f], "group 0", false),
    ];
    let mut sb = [0u8; 1024];
    w.read_exact_at(&mut sb, 1024).expect("read superblock");
    for (at, bytes, word, fix) in cases {
        let mut orig = vec![0u8; bytes.len()];
        w.read_exact_at(&mut orig, at).expect("read");
        w.write_all_at(&bytes, at).expect("write");
        if fix {
            let mut new = [0u8; 1024];
            w.read_exact_at(&mut new, 1024).expect("read superblock");
            let c = crc32c_raw(!0, &new[..0x3fc]);
            w.write_all_at(&c.to_le_bytes(), 1024 + 0x3fc)
                .expect("write checksum");
        }
        let f = File::open(&img).expect("open");
        let err =
            used_ranges(&f, &p).expect_err(&format!("damage at {at} ({word}) must be refused"));
        let msg = err.to_string();
        assert!(msg.contains(word) && msg.contains("e.img"), "{msg}");
        assert!(msg.contains("byte"), "no offset in {msg}");
        w.write_all_at(&orig, at).expect("restore");
        w.write_all_at(&sb, 1024).expect("restore superblock");
    }
    // A journal that needs recovery is refused.
    sh(&format!(
        "debugfs -w -R 'feature needs_recovery' {} >/dev/null 2>&1",
        q(&img)
    ));
    let f = File::open(&img).expect("open");
    let msg = used_ranges(&f, &p).expect_err("needs_recovery").to_string();
    assert!(msg.contains("recovery"), "{msg}");
    sh(&format!(
        "debugfs -w -R 'feature -needs_recovery' {} >/dev/null 2>&1",
        q(&img)
    ));
    used_ranges(&f, &p).expect("recovered");
    // A truncated image: the partition is fine, the file is short.
    w.set_len(100 << 20).expect("truncate");
    let msg = used_ranges(&f, &p).expect_err("truncated").to_string();
    assert!(msg.contains("truncated") || msg.contains("beyond"), "{msg}");
    drop(w);
    println!("ext damage reported with disk, offset and reason");
}

/// The kernel's raw CRC32C (no inversions), for re-sealing superblocks.
fn crc32c_raw(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    crc
}
