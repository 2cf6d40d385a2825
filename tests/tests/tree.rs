//! File-tree images on a real Debian bookworm tree: every kind of object a
//! server has comes back identical (rsync -aHAX finds nothing), browsing,
//! and the files cache.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use ferry_tests::{
    debian_fixture, extract_debian_tree, ferry, is_root, json, json_and_disk_reads, ok, require,
    rsync_differences, sh,
};

/// Adds what a debootstrapped tree may lack: every special case at once.
fn add_special_files(root: &Path) {
    let r = root.display();
    sh(&format!(
        r#"
        cd '{r}'
        mkdir -p srv/t/sticky srv/t/setgid
        chmod 1777 srv/t/sticky; chmod 2775 srv/t/setgid
        echo data > srv/t/one; ln srv/t/one srv/t/two; ln srv/t/one srv/t/setgid/three
        cp usr/bin/true srv/t/suid; chmod 4755 srv/t/suid
        mkfifo srv/t/fifo
        mknod srv/t/char c 1 3; mknod srv/t/block b 7 200
        ln -s ../t/one srv/t/link; ln -s "$(printf 'x%.0s' $(seq 1 120))" srv/t/longlink
        setfattr -n user.note -v 'hello' srv/t/one
        setfattr -n security.selinux -v 'system_u:object_r:etc_t:s0' srv/t/one
        setcap cap_net_raw+ep srv/t/suid2 2>/dev/null || {{ cp usr/bin/true srv/t/capped; setcap cap_net_raw+ep srv/t/capped; }}
        setfacl -m u:1234:rw srv/t/one; setfacl -d -m g:4321:rx srv/t/setgid
        chown 70000:80000 srv/t/one
        truncate -s 64M srv/t/sparse; echo tail >> srv/t/sparse
        printf 'x' > "srv/t/$(printf 'bad\xffname')"
        touch -h -d '2021-02-03 04:05:06.123456789' srv/t/link srv/t/one
        python3 -c 'import socket; s = socket.socket(socket.AF_UNIX); s.bind("srv/t/sock")'
        "#
    ));
}

#[test]
fn a_debian_tree_round_trips_through_a_directory_capture() {
    require!(
        is_root(),
        "a_debian_tree_round_trips_through_a_directory_capture",
        "needs root (mknod, chown, security xattrs)"
    );
    let fixture = debian_fixture();
    let dir = tempfile::tempdir_in("/var/tmp").expect("tempdir");
    let (src, out, lib) = (
        dir.path().join("src"),
        dir.path().join("out"),
        dir.path().join("lib"),
    );
    extract_debian_tree(&fixture, &src);
    add_special_files(&src);

    let m = json(
        ferry(&lib)
            .arg("capture")
            .arg(&src)
            .args(["--files", "--name", "t1"]),
    );
    assert!(
        m["trees"][0]["stream"]["files"].as_u64().unwrap_or(0) > 10_000,
        "{m}"
    );
    ok(ferry(&lib).args(["restore", "t1"]).arg(&out));
    // Sockets are not captured; everything else must be identical.
    assert!(!out.join("srv/t/sock").exists(), "a socket was restored");
    let t = fs::metadata(src.join("srv/t")).expect("stat");
    fs::remove_file(src.join("srv/t/sock")).expect("rm socket");
    // Removing it touched the directory; put its captured mtime back.
    sh(&format!(
        "touch -d @{}.{:09} '{}/srv/t'",
        t.mtime(),
        t.mtime_nsec(),
        src.display()
    ));
    let diff = rsync_differences(&src, &out);
    assert!(diff.is_empty(), "restored tree differs:\n{diff}");
    let sparse = fs::metadata(out.join("srv/t/sparse")).expect("sparse");
    assert!(
        sparse.blocks() * 512 < 1 << 20,
        "sparse file restored dense ({} blocks)",
        sparse.blocks()
    );

    // Unchanged re-capture: the files cache reads no file content, and
    // the disk is not asked for it either (no read-ahead of cached files):
    // from a cold page cache, the capture reads little beyond metadata.
    sh("sync; echo 3 > /proc/sys/vm/drop_caches");
    let (again, disk) = json_and_disk_reads(
        ferry(&lib)
            .arg("capture")
            .arg(&src)
            .args(["--files", "--name", "t2", "--parent", "t1"]),
    );
    assert_eq!(
        again["stats"]["bytes_read"].as_u64(),
        Some(0),
        "{}",
        again["stats"]
    );
    let data = m["trees"][0]["stream"]["data_bytes"].as_u64().unwrap_or(0);
    eprintln!("unchanged re-capture, cold cache: {disk} bytes read from the disk for {data} bytes of file data");
    assert!(
        disk < data / 10,
        "an unchanged re-capture read {disk} bytes from the disk ({data} bytes of file data)"
    );
    // A change is seen: the changed file is read again, and only it.
    sh(&format!("echo more >> '{}/etc/hostname'", src.display()));
    let changed = json(
        ferry(&lib)
            .arg("capture")
            .arg(&src)
            .args(["--files", "--name", "t3", "--parent", "t2"]),
    );
    let read = changed["stats"]["bytes_read"].as_u64().unwrap_or(u64::MAX);
    assert!(read > 0 && read < 4096, "{}", changed["stats"]);

    // Browsing without a restore.
    let hostname = ok(ferry(&lib).args(["image", "cat", "t3:/etc/hostname"]));
    assert_eq!(
        hostname.as_bytes(),
        fs::read(src.join("etc/hostname")).expect("read")
    );
    let listing = ok(ferry(&lib).args(["image", "ls", "t1:/srv/t"]));
    for name in [
        "fifo",
        "char [1, 3]",
        "link -> ../t/one",
        "two => /srv/t/one",
    ] {
        assert!(listing.contains(name), "ls lacks {name}:\n{listing}");
    }
    let etc = dir.path().join("etc");
    ok(ferry(&lib).args(["image", "extract", "t1:/etc"]).arg(&etc));
    let diff = rsync_differences(&src.join("etc"), &etc);
    // /etc/hostname changed after t1.
    assert_eq!(
        diff.lines().filter(|l| !l.contains("hostname")).count(),
        0,
        "extract differs:\n{diff}"
    );
}

/// Detaches a loop device when dropped.
struct Loop(String);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .args(["-d", &self.0])
            .status();
    }
}

#[test]
fn an_unmounted_ext4_partition_round_trips_and_is_never_written() {
    require!(
        is_root(),
        "an_unmounted_ext4_partition_round_trips_and_is_never_written",
        "needs root (loop devices, mount)"
    );
    let fixture = debian_fixture();
    let dir = tempfile::tempdir_in("/var/tmp").expect("tempdir");
    // A private copy, so a bug cannot damage the cached fixture.
    let img = dir.path().join("disk.img");
    ok(std::process::Command::new("cp")
        .arg("--sparse=always")
        .arg(fixture.join("debian.img"))
        .arg(&img));
    let before = ok(std::process::Command::new("sha256sum").arg(&img));
    let part = Loop(
        ok(std::process::Command::new("losetup")
            .args(["-f", "--show", "-r", "-o", "1048576"])
            .arg(&img))
        .trim()
        .to_string(),
    );

    let (lib, out, mnt) = (
        dir.path().join("lib"),
        dir.path().join("out"),
        dir.path().join("mnt"),
    );
    let m = json(ferry(&lib).args(["capture", &part.0, "--files", "--name", "e1"]));
    assert_eq!(
        m["trees"][0]["stream"]["filesystem"]["label"], "root",
        "{}",
        m["trees"][0]
    );
    ok(ferry(&lib).args(["restore", "e1"]).arg(&out));
    drop(part);
    assert_eq!(
        ok(std::process::Command::new("sha256sum").arg(&img)),
        before,
        "the source image was written"
    );

    fs::create_dir(&mnt).expect("mkdir");
    ok(std::process::Command::new("mount")
        .args(["-o", "ro,loop,offset=1048576"])
        .arg(&img)
        .arg(&mnt));
    let diff = rsync_differences(&mnt, &out);
    let _ = std::process::Command::new("umount").arg(&mnt).status();
    assert!(
        diff.is_empty(),
        "the tree read from the unmounted ext4 differs from the mounted one:\n{diff}"
    );
}
