//! `write_table` round trips: specs written to sparse image files read back
//! identically through `imaging::disk::survey_disk`, `sfdisk --dump` and
//! (GPT) `sgdisk -i`, with `sfdisk -V` and `sgdisk -v` finding nothing
//! wrong. No root needed; `sfdisk`/`sgdisk` missing is reported loudly
//! (`SKIPPED`) and only those comparisons are left out.

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use agent::table::{write_table, EntrySpec, PartSpec, Scheme, TableError, TableSpec};
use imaging::disk::{survey_disk, PartitionKind, PartitionTable};

use common::{run, MIB};
const ESP: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
const BIOS_BOOT: &str = "21686148-6449-6e6f-744e-656564454649";
const SWAP: &str = "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f";
const LINUX: &str = "0fc63daf-8483-4772-8e79-3d7d47c47d3c";

fn skipped(test: &str, tool: &str) -> bool {
    if common::have(tool) {
        return false;
    }
    common::say_skipped(
        test,
        &format!("{tool} comparison ({tool} is not installed)"),
    );
    true
}

/// A sparse image of `size` bytes whose MBR boot code area holds a pattern.
fn image(dir: &Path, name: &str, size: u64) -> (std::path::PathBuf, File) {
    let (path, f) = common::sparse(dir, name, size);
    f.write_all_at(&boot_code(), 0).expect("boot code");
    (path, f)
}

fn boot_code() -> Vec<u8> {
    (0..440u32).map(|i| (i * 7 + 3) as u8).collect()
}

fn assert_boot_code_kept(f: &File) {
    let mut b = vec![0u8; 440];
    f.read_exact_at(&mut b, 0).expect("read boot code");
    assert_eq!(b, boot_code(), "the MBR boot code was changed");
}

fn gpt_part(
    number: u32,
    start_mib: u64,
    size_mib: u64,
    ty: &str,
    name: &str,
    attributes: u64,
) -> PartSpec {
    PartSpec {
        number,
        start: start_mib * MIB,
        size: size_mib * MIB,
        entry: EntrySpec::Gpt {
            type_guid: ty.into(),
            unique_guid: format!("6a1b2c3d-0000-4000-8000-{:012x}", 0xabc000 + number),
            name: name.into(),
            attributes,
        },
    }
}

fn mbr_part(
    number: u32,
    start_mib: u64,
    size_mib: u64,
    type_code: u8,
    bootable: bool,
    logical: bool,
) -> PartSpec {
    PartSpec {
        number,
        start: start_mib * MIB,
        size: size_mib * MIB,
        entry: EntrySpec::Mbr {
            type_code,
            bootable,
            logical,
        },
    }
}

fn gpt_spec(partitions: Vec<PartSpec>) -> TableSpec {
    TableSpec {
        scheme: Scheme::Gpt {
            disk_guid: "0b5e55ed-1234-4abc-9def-0123456789ab".into(),
        },
        sector_size: 512,
        disk_size: 1024 * MIB,
        partitions,
    }
}

fn four_gpt() -> Vec<PartSpec> {
    vec![
        gpt_part(1, 1, 1, BIOS_BOOT, "bios", 0),
        gpt_part(2, 2, 100, ESP, "EFI system", 1),
        gpt_part(3, 102, 256, SWAP, "swap", 0),
        gpt_part(4, 358, 600, LINUX, "root ü", (1 << 2) | (1 << 63)),
    ]
}

fn mbr_spec(partitions: Vec<PartSpec>) -> TableSpec {
    TableSpec {
        scheme: Scheme::Mbr {
            disk_signature: "c0ffee42".into(),
        },
        sector_size: 512,
        disk_size: 1024 * MIB,
        partitions,
    }
}

/// The survey of `path` has exactly the spec's table and partitions.
fn assert_survey_matches(path: &Path, spec: &TableSpec) {
    let layout = survey_disk(path, Path::new("/")).expect("survey");
    match (&layout.table, &spec.scheme) {
        (
            PartitionTable::Gpt {
                disk_guid,
                primary_valid,
                backup_valid,
                ..
            },
            Scheme::Gpt { disk_guid: want },
        ) => {
            assert_eq!(disk_guid, want);
            assert!(*primary_valid && *backup_valid, "both GPT headers valid");
        }
        (
            PartitionTable::Mbr { disk_signature, .. },
            Scheme::Mbr {
                disk_signature: want,
            },
        ) => {
            assert_eq!(disk_signature, want)
        }
        (got, want) => panic!("survey found {got:?}, spec has {want:?}"),
    }
    assert_eq!(
        layout.partitions.len(),
        spec.partitions.len(),
        "{layout:#?}"
    );
    for p in &spec.partitions {
        let got = layout
            .partitions
            .iter()
            .find(|s| s.number == p.number)
            .unwrap_or_else(|| panic!("partition {} missing: {layout:#?}", p.number));
        assert_eq!(
            (got.start, got.size),
            (p.start, p.size),
            "partition {}",
            p.number
        );
        match (&got.kind, &p.entry) {
            (
                PartitionKind::Gpt {
                    type_guid,
                    unique_guid,
                    name,
                    attributes,
                    ..
                },
                EntrySpec::Gpt {
                    type_guid: t,
                    unique_guid: u,
                    name: n,
                    attributes: a,
                },
            ) => assert_eq!((type_guid, unique_guid, name, attributes), (t, u, n, a)),
            (
                PartitionKind::Mbr {
                    type_code,
                    bootable,
                    logical,
                    ..
                },
                EntrySpec::Mbr {
                    type_code: t,
                    bootable: b,
                    logical: l,
                },
            ) => assert_eq!(
                (type_code, bootable, logical),
                (t, b, l),
                "partition {}",
                p.number
            ),
            (got, want) => panic!("partition {}: survey {got:?}, spec {want:?}", p.number),
        }
    }
}

/// `sfdisk --dump`: the header fields and, per partition number, the
/// `key=value` fields.
fn sfdisk_dump(
    path: &Path,
) -> (
    BTreeMap<String, String>,
    BTreeMap<u32, BTreeMap<String, String>>,
) {
    let out = run("sfdisk", &["--dump", path.to_str().expect("utf-8 path")]);
    let prefix = path.display().to_string();
    let mut head = BTreeMap::new();
    let mut parts = BTreeMap::new();
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix(&prefix) {
            let (num, fields) = rest.split_once(" : ").expect("partition line");
            let mut m = BTreeMap::new();
            for f in fields.split(", ") {
                let (k, v) = f.split_once('=').unwrap_or((f, ""));
                m.insert(k.trim().to_string(), v.trim().trim_matches('"').to_string());
            }
            parts.insert(num.trim().parse().expect("number"), m);
        } else if let Some((k, v)) = line.split_once(": ") {
            head.insert(k.to_string(), v.to_string());
        }
    }
    (head, parts)
}

/// Undoes sfdisk's `\\xHH` escapes of non-ASCII bytes.
fn unescape(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') && i + 4 <= b.len() {
            out.push(u8::from_str_radix(&s[i + 2..i + 4], 16).expect("hex escape"));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("utf-8 name")
}

fn sfdisk_verify(test: &str, path: &Path) {
    if skipped(test, "sfdisk") {
        return;
    }
    let out = run("sfdisk", &["-V", path.to_str().expect("utf-8 path")]);
    assert!(out.contains("No errors detected"), "sfdisk -V: {out}");
}

#[test]
fn gpt_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = gpt_spec(four_gpt());
    let (path, f) = image(dir.path(), "gpt.img", spec.disk_size);
    write_table(&f, "gpt.img", &spec).expect("write");
    assert_boot_code_kept(&f);
    assert_survey_matches(&path, &spec);
    sfdisk_verify("gpt_round_trip", &path);
    if !skipped("gpt_round_trip", "sfdisk") {
        let (head, parts) = sfdisk_dump(&path);
        assert_eq!(head["label"], "gpt");
        assert_eq!(
            head["label-id"].to_lowercase(),
            "0b5e55ed-1234-4abc-9def-0123456789ab"
        );
        assert_eq!(parts.len(), 4);
        for p in &spec.partitions {
            let EntrySpec::Gpt {
                type_guid,
                unique_guid,
                name,
                ..
            } = &p.entry
            else {
                unreachable!()
            };
            let d = &parts[&p.number];
            assert_eq!(d["start"].parse::<u64>().expect("start"), p.start / 512);
            assert_eq!(d["size"].parse::<u64>().expect("size"), p.size / 512);
            assert_eq!(&d["type"].to_lowercase(), type_guid);
            assert_eq!(&d["uuid"].to_lowercase(), unique_guid);
            assert_eq!(&unescape(&d["name"]), name);
        }
        assert_eq!(parts[&2]["attrs"], "RequiredPartition");
        assert_eq!(parts[&4]["attrs"], "LegacyBIOSBootable GUID:63");
    }
    if !skipped("gpt_round_trip", "sgdisk") {
        let p = path.to_str().expect("utf-8 path");
        let v = run("sgdisk", &["-v", p]);
        assert!(v.contains("No problems found"), "sgdisk -v: {v}");
        let listing = run("sgdisk", &["-p", p]);
        assert!(
            listing.contains("Disk identifier (GUID): 0B5E55ED-1234-4ABC-9DEF-0123456789AB"),
            "{listing}"
        );
        for part in &spec.partitions {
            let EntrySpec::Gpt {
                type_guid,
                unique_guid,
                name,
                attributes,
            } = &part.entry
            else {
                unreachable!()
            };
            let info = run("sgdisk", &["-i", &part.number.to_string(), p]);
            let field = |k: &str| {
                info.lines()
                    .find_map(|l| l.strip_prefix(k))
                    .unwrap_or_else(|| panic!("{k} in {info}"))
                    .trim()
                    .to_string()
            };
            assert!(
                field("Partition GUID code:").starts_with(&type_guid.to_uppercase()),
                "{info}"
            );
            assert_eq!(field("Partition unique GUID:"), unique_guid.to_uppercase());
            assert!(field("First sector:").starts_with(&format!("{} ", part.start / 512)));
            assert!(field("Last sector:")
                .starts_with(&format!("{} ", (part.start + part.size) / 512 - 1)));
            assert_eq!(field("Attribute flags:"), format!("{attributes:016X}"));
            assert_eq!(field("Partition name:"), format!("'{name}'"));
        }
    }
}

#[test]
fn gpt_keeps_gaps_in_numbering_and_4k_sectors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spec = gpt_spec(vec![
        gpt_part(1, 1, 10, ESP, "esp", 0),
        gpt_part(3, 20, 30, LINUX, "three", 0),
        gpt_part(7, 60, 30, LINUX, "seven", 0),
    ]);
    let (path, f) = image(dir.path(), "gap.img", spec.disk_size);
    write_table(&f, "gap.img", &spec).expect("write");
    assert_survey_matches(&path, &spec);
    sfdisk_verify("gpt_keeps_gaps_in_numbering", &path);

    spec.sector_size = 4096;
    let (path4, f4) = image(dir.path(), "4k.img", spec.disk_size);
    write_table(&f4, "4k.img", &spec).expect("write 4k");
    let layout = survey_disk(&path4, Path::new("/")).expect("survey");
    assert!(
        matches!(
            layout.table,
            PartitionTable::Gpt {
                sector_size: 4096,
                ..
            }
        ),
        "{:?}",
        layout.table
    );
    assert_survey_matches(&path4, &spec);
}

#[test]
fn mbr_primaries_round_trip_over_a_stale_gpt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gpt = gpt_spec(four_gpt());
    let spec = mbr_spec(vec![
        mbr_part(1, 1, 200, 0x83, true, false),
        mbr_part(2, 201, 100, 0x82, false, false),
        mbr_part(4, 400, 624, 0x0c, false, false),
    ]);
    let (path, f) = image(dir.path(), "mbr.img", spec.disk_size);
    write_table(&f, "mbr.img", &gpt).expect("write gpt first");
    write_table(&f, "mbr.img", &spec).expect("write mbr over it");
    assert_boot_code_kept(&f);
    assert_survey_matches(&path, &spec);
    // Both GPT headers are gone.
    let mut h = [0u8; 8];
    for off in [512, spec.disk_size - 512] {
        f.read_exact_at(&mut h, off).expect("read");
        assert_ne!(&h, b"EFI PART", "stale GPT header at byte {off}");
    }
    sfdisk_verify("mbr_primaries_round_trip", &path);
    if !skipped("mbr_primaries_round_trip", "sfdisk") {
        let (head, parts) = sfdisk_dump(&path);
        assert_eq!(head["label"], "dos");
        assert_eq!(head["label-id"], "0xc0ffee42");
        assert_eq!(parts.keys().copied().collect::<Vec<_>>(), vec![1, 2, 4]);
        assert_eq!(parts[&1]["type"], "83");
        assert!(parts[&1].contains_key("bootable"));
        assert!(!parts[&2].contains_key("bootable"));
        assert_eq!(parts[&4]["type"], "c");
        assert_eq!(
            parts[&4]["start"].parse::<u64>().expect("start"),
            400 * 2048
        );
        assert_eq!(parts[&4]["size"].parse::<u64>().expect("size"), 624 * 2048);
    }
    if !skipped("mbr_primaries_round_trip", "gdisk") {
        let out = run("gdisk", &["-l", path.to_str().expect("utf-8 path")]);
        assert!(
            out.contains("MBR: MBR only") && out.contains("GPT: not present"),
            "gdisk must see only the MBR: {out}"
        );
    }
}

#[test]
fn mbr_extended_with_two_logicals_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = mbr_spec(vec![
        mbr_part(1, 1, 300, 0x83, true, false),
        mbr_part(2, 301, 700, 0x05, false, false),
        mbr_part(5, 302, 200, 0x82, false, true),
        mbr_part(6, 503, 497, 0x83, false, true),
    ]);
    let (path, f) = image(dir.path(), "ext.img", spec.disk_size);
    write_table(&f, "ext.img", &spec).expect("write");
    assert_boot_code_kept(&f);
    assert_survey_matches(&path, &spec);
    sfdisk_verify("mbr_extended_with_two_logicals", &path);
    if !skipped("mbr_extended_with_two_logicals", "sfdisk") {
        let (_, parts) = sfdisk_dump(&path);
        assert_eq!(parts.keys().copied().collect::<Vec<_>>(), vec![1, 2, 5, 6]);
        assert_eq!(parts[&2]["type"], "5");
        assert_eq!(parts[&5]["type"], "82");
        for p in &spec.partitions {
            let d = &parts[&p.number];
            assert_eq!(d["start"].parse::<u64>().expect("start"), p.start / 512);
            assert_eq!(d["size"].parse::<u64>().expect("size"), p.size / 512);
        }
    }
    // Rewriting the same table with one logical partition fewer leaves a
    // chain of one.
    let fewer = mbr_spec(spec.partitions[..3].to_vec());
    write_table(&f, "ext.img", &fewer).expect("rewrite");
    assert_survey_matches(&path, &fewer);
}

/// A spec that fails validation writes nothing.
fn refused(spec: &TableSpec, want: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, f) = image(dir.path(), "bad.img", spec.disk_size);
    let err = write_table(&f, "bad.img", spec).expect_err("must be refused");
    let msg = err.to_string();
    assert!(msg.contains("bad.img") && msg.contains(want), "{msg}");
    let mut sector = vec![0u8; 4096];
    f.read_exact_at(&mut sector, 0).expect("read");
    assert_eq!(&sector[..440], &boot_code()[..]);
    assert!(
        sector[440..].iter().all(|&b| b == 0),
        "something was written: {msg}"
    );
}

#[test]
fn invalid_specs_are_refused_before_writing() {
    let mut overlap = four_gpt();
    overlap[2].size += MIB;
    refused(&gpt_spec(overlap), "overlaps partition 3");

    let mut misaligned = four_gpt();
    misaligned[1].start += 100;
    refused(&gpt_spec(misaligned), "not aligned to 512-byte sectors");

    let mut outside = four_gpt();
    outside[3].size = 700 * MIB;
    refused(&gpt_spec(outside), "ends beyond the");

    let mut last_lbas = four_gpt();
    last_lbas[3].size = (1024 - 358) * MIB;
    refused(&gpt_spec(last_lbas), "outside the GPT's usable LBAs");

    let mut first_lbas = four_gpt();
    first_lbas[0].start = 512;
    refused(&gpt_spec(first_lbas), "outside the GPT's usable LBAs");

    let mut long_name = four_gpt();
    if let EntrySpec::Gpt { name, .. } = &mut long_name[0].entry {
        *name = "x".repeat(37);
    }
    refused(&gpt_spec(long_name), "exceeds 36 UTF-16 units");

    let mut dup_guid = four_gpt();
    dup_guid[1].entry = dup_guid[0].entry.clone();
    refused(&gpt_spec(dup_guid), "used twice");

    refused(
        &mbr_spec(vec![
            mbr_part(1, 1, 10, 0x83, false, false),
            mbr_part(5, 20, 10, 0x83, false, false),
        ]),
        "primary partitions are numbered 1-4",
    );
    refused(
        &mbr_spec(vec![mbr_part(5, 20, 10, 0x83, false, true)]),
        "without an extended partition",
    );
    refused(
        &mbr_spec(vec![
            mbr_part(1, 1, 100, 0x05, false, false),
            mbr_part(5, 50, 100, 0x83, false, true),
        ]),
        "inside the extended partition",
    );
    refused(
        &mbr_spec(vec![
            mbr_part(1, 1, 10, 0x83, false, false),
            four_gpt()[1].clone(),
        ]),
        "other scheme",
    );
    let mut sig = mbr_spec(vec![mbr_part(1, 1, 10, 0x83, false, false)]);
    sig.scheme = Scheme::Mbr {
        disk_signature: "xyz".into(),
    };
    refused(&sig, "not 8 hex digits");
}

#[test]
fn mbr_beyond_2_tib_and_size_mismatch_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spec = mbr_spec(vec![mbr_part(1, 1, 3 << 20, 0x83, false, false)]);
    spec.disk_size = (3 << 20) * MIB + 2 * MIB;
    let (_, f) = image(dir.path(), "big.img", spec.disk_size);
    let err = write_table(&f, "big.img", &spec).expect_err("beyond 2 TiB");
    assert!(err.to_string().contains("limit of an MBR"), "{err}");

    let (_, small) = image(dir.path(), "small.img", 512 * MIB);
    let err = write_table(&small, "small.img", &mbr_spec(vec![])).expect_err("size mismatch");
    assert!(
        matches!(err, TableError::SizeMismatch { actual, .. } if actual == 512 * MIB),
        "{err}"
    );
}
