//! Plans for layouts built in code: one MBR root, a GPT server disk,
//! firmware conversions, mappings, and invariants over random layouts.

use imaging::chunk::ChunkId;
use imaging::disk::{
    BootArea, BootCode, DiskLayout, Filesystem, FsType, Partition, PartitionKind, PartitionTable,
    Role,
};
use imaging::manifest::{BlockStream, Disk, DiskContent, PartitionContent, PartitionImage};
use proptest::prelude::*;

use crate::plan::layout::usable_end;
use crate::plan::*;
use crate::table::{EntrySpec, Scheme};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const LINUX: &str = "0fc63daf-8483-4772-8e79-3d69d8477de4";
const SWAP: &str = "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f";
const ESP: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";

fn stream(size: u64) -> BlockStream {
    BlockStream {
        size,
        list: ChunkId::of(b""),
        extents: 1,
        chunks: 0,
        data_bytes: 0,
        hole_bytes: size,
        unused_bytes: 0,
    }
}

fn filesystem(fs_type: FsType, n: u32, size: u64, used: u64) -> Filesystem {
    Filesystem {
        fs_type,
        version: None,
        uuid: Some(format!("0000000{n}-1111-2222-3333-444444444444")),
        label: Some(format!("label{n}")),
        size: Some(size),
        used: Some(used),
        block_size: Some(4096),
        problem: None,
    }
}

/// What a test partition holds.
#[derive(Clone, Copy, Debug)]
enum Holds {
    Ext4 { used: u64 },
    Xfs,
    Vfat,
    Swap,
    Unknown,
}

/// A partition with its stored content.
fn part(
    number: u32,
    start: u64,
    size: u64,
    kind: PartitionKind,
    holds: Holds,
) -> (Partition, PartitionContent) {
    let (role, fs, content) = match holds {
        Holds::Ext4 { used } => (
            Role::Linux,
            Some(filesystem(FsType::Ext4, number, size, used)),
            PartitionContent::UsedBlocks {
                stream: stream(size),
                used_bytes: used,
            },
        ),
        Holds::Xfs => (
            Role::Linux,
            Some(filesystem(FsType::Xfs, number, size, size / 2)),
            PartitionContent::Full {
                stream: stream(size),
            },
        ),
        Holds::Vfat => (
            Role::Esp,
            Some(filesystem(FsType::Vfat, number, size, size / 4)),
            PartitionContent::UsedBlocks {
                stream: stream(size),
                used_bytes: size / 4,
            },
        ),
        Holds::Swap => (
            Role::Swap,
            Some(filesystem(FsType::Swap, number, size, 0)),
            PartitionContent::Swap,
        ),
        Holds::Unknown => (
            Role::Other,
            None,
            PartitionContent::Full {
                stream: stream(size),
            },
        ),
    };
    let p = Partition {
        number,
        start,
        size,
        kind,
        role,
        filesystem: fs,
    };
    (p, content)
}

fn gpt_kind(number: u32, type_guid: &str) -> PartitionKind {
    PartitionKind::Gpt {
        type_guid: type_guid.into(),
        unique_guid: format!("aaaaaaaa-0000-0000-0000-00000000000{number}"),
        name: format!("part{number}"),
        attributes: 0,
        first_lba: 0,
        last_lba: 0,
    }
}

fn mbr_kind(type_code: u8, logical: bool) -> PartitionKind {
    PartitionKind::Mbr {
        type_code,
        bootable: !logical && type_code == 0x83,
        logical,
        first_lba: 0,
        sectors: 0,
    }
}

fn gpt_table() -> PartitionTable {
    PartitionTable::Gpt {
        disk_guid: "dddddddd-0000-0000-0000-000000000000".into(),
        sector_size: 512,
        first_usable_lba: 34,
        last_usable_lba: 0,
        entry_count: 128,
        primary_valid: true,
        backup_valid: true,
    }
}

fn mbr_table() -> PartitionTable {
    PartitionTable::Mbr {
        disk_signature: "12345678".into(),
        sector_size: 512,
    }
}

/// A partitioned image disk.
fn disk(
    size: u64,
    table: PartitionTable,
    parts: Vec<(Partition, PartitionContent)>,
    boot: BootArea,
) -> Disk {
    let boot = BootArea {
        esp: parts
            .iter()
            .find(|(p, _)| p.is_esp())
            .map(|(p, _)| p.number),
        bios_boot: parts
            .iter()
            .find(|(p, _)| p.is_bios_boot())
            .map(|(p, _)| p.number),
        ..boot
    };
    let head = parts.iter().map(|(p, _)| p.start).min().unwrap_or(MIB);
    Disk {
        name: "disk0".into(),
        source: "/dev/sda".into(),
        size,
        content: DiskContent::Partitioned {
            layout: DiskLayout {
                size,
                logical_sector_size: 512,
                physical_sector_size: 512,
                model: None,
                serial: None,
                wwn: None,
                table,
                partitions: parts.iter().map(|(p, _)| p.clone()).collect(),
                boot,
            },
            head: stream(head),
            partitions: parts
                .into_iter()
                .map(|(p, content)| PartitionImage {
                    number: p.number,
                    content,
                })
                .collect(),
        },
    }
}

/// Layout (a): MBR, one ext4 root of 0.9 GiB used at 1 MiB on 2 GiB, GRUB
/// in the MBR and the gap.
fn layout_a() -> Disk {
    let used = GIB * 9 / 10;
    let root = part(
        1,
        MIB,
        2 * GIB - MIB,
        mbr_kind(0x83, false),
        Holds::Ext4 { used },
    );
    let boot = BootArea {
        table_ranges: vec![(0, 512)],
        gap: Some((512, MIB)),
        gap_has_data: true,
        mbr_boot_code: Some(BootCode::Grub),
        esp: None,
        bios_boot: None,
    };
    disk(2 * GIB, mbr_table(), vec![root], boot)
}

/// Layout (b): GPT on 8 GiB: ESP (vfat 64 MiB), /boot (ext4 256 MiB),
/// root (ext4, 3 GiB used), swap (256 MiB).
fn layout_b() -> Disk {
    let root_size = 8 * GIB - (1 + 64 + 256 + 256 + 1) * MIB;
    let parts = vec![
        part(1, MIB, 64 * MIB, gpt_kind(1, ESP), Holds::Vfat),
        part(
            2,
            65 * MIB,
            256 * MIB,
            gpt_kind(2, LINUX),
            Holds::Ext4 { used: 60 * MIB },
        ),
        part(
            3,
            321 * MIB,
            root_size,
            gpt_kind(3, LINUX),
            Holds::Ext4 { used: 3 * GIB },
        ),
        part(
            4,
            321 * MIB + root_size,
            256 * MIB,
            gpt_kind(4, SWAP),
            Holds::Swap,
        ),
    ];
    disk(8 * GIB, gpt_table(), parts, BootArea::default())
}

fn target(path: &str, size: u64) -> TargetDisk {
    TargetDisk {
        path: path.into(),
        size,
        logical_sector_size: 512,
    }
}

fn plan_one(d: Disk, size: u64, options: &PlanOptions) -> Result<DiskPlan, PlanError> {
    let p = plan(&[d], &[target("/dev/vda", size)], options)?;
    check_invariants(&p);
    Ok(p.disks.into_iter().next().expect("one disk"))
}

fn step(d: &DiskPlan, number: u32) -> &PartitionStep {
    d.steps
        .iter()
        .find(|s| s.number == number)
        .unwrap_or_else(|| panic!("no step {number} in {d:#?}"))
}

/// Options that set the firmware.
fn with_firmware(firmware: Firmware) -> PlanOptions {
    PlanOptions {
        firmware: Some(firmware),
        ..PlanOptions::default()
    }
}

/// The GPT type GUID of target partition `number`.
fn type_guid(d: &DiskPlan, number: u32) -> &str {
    let table = d.table.as_ref().expect("a table");
    let part = table.partitions.iter().find(|p| p.number == number);
    match part.map(|p| &p.entry) {
        Some(EntrySpec::Gpt { type_guid, .. }) => type_guid,
        other => panic!("partition {number} is {other:?}"),
    }
}

/// The invariants every plan keeps: partitions do not overlap, start on
/// 1 MiB, lie in the usable area, logical ones inside their container,
/// and the table says what the steps say.
fn check_invariants(plan: &DeployPlan) {
    for d in &plan.disks {
        let Some(table) = &d.table else { continue };
        let kind = match table.scheme {
            Scheme::Gpt { .. } => TableKind::Gpt,
            Scheme::Mbr { .. } => TableKind::Mbr,
        };
        let end = usable_end(kind, d.target_size, u64::from(table.sector_size));
        assert_eq!(table.partitions.len(), d.steps.len());
        let mut ranges = Vec::new();
        for (p, s) in table.partitions.iter().zip(&d.steps) {
            assert_eq!((p.number, p.start, p.size), (s.number, s.start, s.size));
            assert_eq!(p.start % ALIGN, 0, "partition {} at {}", p.number, p.start);
            assert!(
                p.start >= ALIGN && p.start + p.size <= end,
                "{p:?} outside [1 MiB, {end})"
            );
            assert!(p.size > 0);
            if s.method != Method::None {
                ranges.push((p.start, p.start + p.size));
            }
            if let EntrySpec::Mbr { logical: true, .. } = p.entry {
                let c = d
                    .steps
                    .iter()
                    .find(|s| s.method == Method::None)
                    .expect("container");
                assert!(c.start < p.start && p.start + p.size <= c.start + c.size);
            }
        }
        ranges.sort_unstable();
        for w in ranges.windows(2) {
            assert!(w[0].1 <= w[1].0, "{:?} overlaps {:?}", w[0], w[1]);
        }
    }
    let json = serde_json::to_string(plan).expect("serialises");
    let back: DeployPlan = serde_json::from_str(&json).expect("deserialises");
    assert_eq!(&back, plan);
    assert!(!plan.to_string().is_empty());
}

#[test]
fn a_onto_an_equal_disk_copies_blocks_and_grub() {
    let d = plan_one(layout_a(), 2 * GIB, &PlanOptions::default()).expect("fits");
    let root = step(&d, 1);
    assert_eq!((root.start, root.size), (MIB, 2 * GIB - MIB));
    assert_eq!(root.method, Method::Block { grow: false });
    let fs = root.fs.as_ref().expect("fs");
    assert_eq!(
        fs.uuid.as_deref(),
        Some("00000001-1111-2222-3333-444444444444")
    );
    assert_eq!(d.copy_head.ranges(), vec![(0, 440), (512, MIB)]);
    let table = d.table.expect("table");
    assert_eq!(
        table.scheme,
        Scheme::Mbr {
            disk_signature: "12345678".into()
        }
    );
    assert_eq!(
        table.partitions[0].entry,
        EntrySpec::Mbr {
            type_code: 0x83,
            bootable: true,
            logical: false
        }
    );
}

#[test]
fn a_onto_a_bigger_disk_grows_the_root() {
    let d = plan_one(layout_a(), 4 * GIB, &PlanOptions::default()).expect("fits");
    let root = step(&d, 1);
    assert_eq!(root.size, 4 * GIB - MIB);
    assert_eq!(root.method, Method::Block { grow: true });
}

#[test]
fn a_onto_a_smaller_disk_makes_a_file_tree() {
    let d = plan_one(layout_a(), 3 * GIB / 2, &PlanOptions::default()).expect("fits");
    let root = step(&d, 1);
    assert_eq!(root.size, 3 * GIB / 2 - MIB);
    assert_eq!(root.method, Method::Tree { mkfs: FsType::Ext4 });
    let fs = root.fs.as_ref().expect("fs");
    assert_eq!(fs.label.as_deref(), Some("label1"));
}

#[test]
fn a_onto_a_too_small_disk_says_by_how_much() {
    let err = plan_one(layout_a(), 800 * MIB, &PlanOptions::default()).expect_err("too small");
    let min = tree_min_size(GIB * 9 / 10, FsType::Ext4).div_ceil(MIB) * MIB;
    let PlanError::DoesNotFit {
        needed, available, ..
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!((*needed, *available), (MIB + min, 800 * MIB));
    let msg = err.to_string();
    let short = MIB + min - 800 * MIB;
    assert!(msg.contains(&format!("{short} more bytes")), "{msg}");
}

#[test]
fn b_onto_equal_bigger_and_smaller_disks_resizes_only_the_root() {
    let root_size = 8 * GIB - 578 * MIB;
    for (size, root_method) in [
        (8 * GIB, Method::Block { grow: false }),
        (16 * GIB, Method::Block { grow: true }),
        (6 * GIB, Method::Tree { mkfs: FsType::Ext4 }),
    ] {
        let d = plan_one(layout_b(), size, &PlanOptions::default()).expect("fits");
        assert_eq!(step(&d, 1).size, 64 * MIB);
        assert_eq!(step(&d, 1).method, Method::Block { grow: false });
        assert_eq!(step(&d, 2).size, 256 * MIB);
        assert_eq!(step(&d, 4).size, 256 * MIB);
        assert_eq!(step(&d, 4).method, Method::Swap);
        let root = step(&d, 3);
        assert_eq!(root.method, root_method, "onto {size}");
        assert_eq!(root.size, root_size + size - 8 * GIB);
        let table = d.table.expect("table");
        assert_eq!(
            table.scheme,
            Scheme::Gpt {
                disk_guid: "dddddddd-0000-0000-0000-000000000000".into()
            }
        );
        let EntrySpec::Gpt { unique_guid, .. } = &table.partitions[2].entry else {
            panic!("not GPT");
        };
        assert_eq!(unique_guid, "aaaaaaaa-0000-0000-0000-000000000003");
        assert_eq!(d.copy_head, HeadCopy::default());
    }
}

#[test]
fn bios_to_uefi_makes_gpt_with_a_new_esp_first() {
    let options = with_firmware(Firmware::Uefi);
    let p = plan(&[layout_a()], &[target("/dev/vda", 4 * GIB)], &options).expect("fits");
    check_invariants(&p);
    assert_eq!(p.firmware, Firmware::Uefi);
    let d = &p.disks[0];
    let table = d.table.as_ref().expect("table");
    let Scheme::Gpt { disk_guid } = &table.scheme else {
        panic!("{table:?}");
    };
    assert!(uuid::Uuid::parse_str(disk_guid).is_ok());
    let esp = step(d, 2);
    assert_eq!(
        (esp.start, esp.size, &esp.method),
        (MIB, NEW_ESP_SIZE, &Method::NewEsp)
    );
    assert_eq!(esp.source, None);
    let root = step(d, 1);
    assert_eq!(root.start, MIB + NEW_ESP_SIZE);
    assert_eq!(root.method, Method::Block { grow: true });
    assert_eq!(type_guid(d, 1), LINUX);
    assert_eq!(d.copy_head, HeadCopy::default());
}

#[test]
fn uefi_to_bios_adds_a_bios_boot_partition_and_drops_nothing() {
    let options = with_firmware(Firmware::Bios);
    let d = plan_one(layout_b(), 8 * GIB, &options).expect("fits");
    let bios = step(&d, 5);
    assert_eq!((bios.start, bios.size), (MIB, BIOS_BOOT_SIZE));
    assert_eq!(bios.method, Method::NewBiosBoot);
    assert_eq!(step(&d, 1).start, 2 * MIB);
    assert_eq!(step(&d, 1).method, Method::Block { grow: false });
    assert_eq!(step(&d, 3).method, Method::Tree { mkfs: FsType::Ext4 });
    assert_eq!(d.steps.len(), 5);
    assert_eq!(type_guid(&d, 5), "21686148-6449-6e6f-744e-656564454649");
    assert!(d.notes.iter().any(|n| n.contains("grub-install")));
}

/// A data disk: GPT with one xfs partition of 10 GiB.
fn data_disk() -> Disk {
    let data = part(1, MIB, 10 * GIB, gpt_kind(1, LINUX), Holds::Xfs);
    let mut d = disk(
        10 * GIB + 2 * MIB,
        gpt_table(),
        vec![data],
        BootArea::default(),
    );
    d.name = "disk1".into();
    d
}

#[test]
fn explicit_mapping_reverses_two_disks() {
    let options = PlanOptions {
        mapping: Some(vec![(0, 1), (1, 0)]),
        ..PlanOptions::default()
    };
    let targets = [target("/dev/vda", 20 * GIB), target("/dev/vdb", 4 * GIB)];
    let p = plan(&[layout_a(), data_disk()], &targets, &options).expect("fits");
    check_invariants(&p);
    assert_eq!(
        (p.disks[0].source, p.disks[0].target.as_str()),
        (0, "/dev/vdb")
    );
    assert_eq!(
        (p.disks[1].source, p.disks[1].target.as_str()),
        (1, "/dev/vda")
    );
    assert!(p.disks[0].boot && !p.disks[1].boot);
    assert_eq!(step(&p.disks[1], 1).method, Method::Block { grow: true });

    // By order, the data disk lands on the 4 GiB disk: xfs cannot shrink.
    let err = plan(
        &[layout_a(), data_disk()],
        &targets[..],
        &PlanOptions::default(),
    )
    .expect_err("xfs onto 4 GiB");
    let PlanError::CannotShrink {
        number: 1, what, ..
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!(what, "xfs");
    assert!(err.to_string().contains("more bytes are needed"), "{err}");
}

#[test]
fn bad_mappings_are_refused() {
    let disks = [layout_a(), data_disk()];
    let targets = [target("/dev/vda", 20 * GIB), target("/dev/vdb", 20 * GIB)];
    let with = |m: Vec<(usize, usize)>| PlanOptions {
        mapping: Some(m),
        ..PlanOptions::default()
    };
    assert_eq!(
        plan(&disks, &targets, &with(vec![(0, 1), (1, 1)])),
        Err(PlanError::MappedTwice {
            what: "target",
            index: 1
        })
    );
    assert_eq!(
        plan(&disks, &targets, &with(vec![(0, 2), (1, 0)])),
        Err(PlanError::NoSuchDisk {
            what: "target",
            index: 2,
            count: 2
        })
    );
    assert_eq!(
        plan(&disks, &targets, &with(vec![(1, 0)])),
        Err(PlanError::Unmapped { index: 0 })
    );
    assert_eq!(
        plan(&disks, &targets[..1], &PlanOptions::default()),
        Err(PlanError::TooFewTargets {
            sources: 2,
            targets: 1
        })
    );
}

/// Options that convert partition `number` of disk 0 to `to`.
fn converting(number: u32, to: FsType) -> PlanOptions {
    PlanOptions {
        convert: vec![FsConvert {
            disk: 0,
            number,
            to,
        }],
        ..PlanOptions::default()
    }
}

#[test]
fn conversion_makes_a_file_tree_of_the_new_type() {
    let options = converting(1, FsType::Xfs);
    let d = plan_one(layout_a(), 4 * GIB, &options).expect("fits");
    assert_eq!(step(&d, 1).method, Method::Tree { mkfs: FsType::Xfs });
    let fs = step(&d, 1).fs.clone().expect("fs");
    assert_eq!(
        (fs.fs_type, fs.label.as_deref()),
        (FsType::Xfs, Some("label1"))
    );

    let esp = converting(1, FsType::Ext4);
    let err = plan_one(layout_b(), 8 * GIB, &esp).expect_err("vfat has no tree");
    assert!(
        matches!(err, PlanError::BadConversion { number: 1, .. }),
        "{err:?}"
    );
}

/// MBR with a primary root, and swap and /srv as logical partitions.
fn layout_logical() -> Disk {
    let parts = vec![
        part(
            1,
            MIB,
            2 * GIB,
            mbr_kind(0x83, false),
            Holds::Ext4 { used: GIB },
        ),
        part(
            2,
            2 * GIB + MIB,
            2 * GIB,
            mbr_kind(0x05, false),
            Holds::Unknown,
        ),
        part(
            5,
            2 * GIB + 2 * MIB,
            512 * MIB,
            mbr_kind(0x82, true),
            Holds::Swap,
        ),
        part(
            6,
            2 * GIB + 515 * MIB,
            GIB,
            mbr_kind(0x83, true),
            Holds::Ext4 { used: 100 * MIB },
        ),
    ];
    let mut d = disk(5 * GIB, mbr_table(), parts, BootArea::default());
    let DiskContent::Partitioned {
        layout, partitions, ..
    } = &mut d.content
    else {
        unreachable!()
    };
    layout.partitions[1].role = Role::Extended;
    partitions[1].content = PartitionContent::Extended;
    d
}

#[test]
fn logical_partitions_stay_logical_inside_a_container() {
    let d = plan_one(layout_logical(), 10 * GIB, &PlanOptions::default()).expect("fits");
    assert_eq!(
        d.steps.iter().map(|s| s.number).collect::<Vec<_>>(),
        vec![1, 2, 5, 6]
    );
    assert_eq!(step(&d, 2).method, Method::None);
    assert_eq!(step(&d, 2).source, Some(2));
    assert_eq!(step(&d, 1).method, Method::Block { grow: true });
    assert_eq!(step(&d, 5).method, Method::Swap);
    assert_eq!(step(&d, 6).method, Method::Block { grow: false });
}

#[test]
fn gpt_with_many_partitions_to_mbr_uses_an_extended_partition() {
    let mut d = layout_b();
    let DiskContent::Partitioned {
        layout, partitions, ..
    } = &mut d.content
    else {
        unreachable!()
    };
    let (p, c) = part(
        5,
        7 * GIB,
        100 * MIB,
        gpt_kind(5, LINUX),
        Holds::Ext4 { used: MIB },
    );
    layout.partitions.push(p);
    partitions.push(PartitionImage {
        number: 5,
        content: c,
    });
    let options = PlanOptions {
        scheme: Some(TableKind::Mbr),
        ..PlanOptions::default()
    };
    let p = plan_one(d, 16 * GIB, &options).expect("fits");
    assert_eq!(
        p.steps
            .iter()
            .map(|s| (s.number, s.source))
            .collect::<Vec<_>>(),
        vec![
            (1, Some(1)),
            (2, Some(2)),
            (3, Some(3)),
            (4, None),
            (5, Some(5)),
            (6, Some(4))
        ]
    );
    assert!(p.notes.iter().any(|n| n.contains("renumbered")));
}

#[test]
fn a_whole_disk_file_system_becomes_the_whole_target() {
    let (mut fs, content) = part(0, 0, GIB, PartitionKind::Whole, Holds::Ext4 { used: MIB });
    fs.role = Role::Other;
    let d = disk(
        GIB,
        PartitionTable::None,
        vec![(fs, content)],
        BootArea::default(),
    );
    let d = plan_one(d, 2 * GIB, &PlanOptions::default()).expect("fits");
    assert_eq!(d.table, None);
    let s = step(&d, 0);
    assert_eq!(
        (s.start, s.size, &s.method),
        (0, 2 * GIB, &Method::Block { grow: true })
    );
}

#[test]
fn a_4k_target_needs_a_fresh_file_system_for_1k_blocks() {
    let mut d = layout_a();
    let DiskContent::Partitioned { layout, .. } = &mut d.content else {
        unreachable!()
    };
    if let Some(fs) = &mut layout.partitions[0].filesystem {
        fs.block_size = Some(1024);
    }
    let t = TargetDisk {
        logical_sector_size: 4096,
        ..target("/dev/vda", 4 * GIB)
    };
    let p = plan(&[d], &[t], &PlanOptions::default()).expect("fits");
    check_invariants(&p);
    assert_eq!(
        step(&p.disks[0], 1).method,
        Method::Tree { mkfs: FsType::Ext4 }
    );
}

#[test]
fn the_plan_prints_as_a_table() {
    let d = plan(
        &[layout_b()],
        &[target("/dev/vda", 16 * GIB)],
        &PlanOptions::default(),
    )
    .expect("fits");
    let text = d.to_string();
    assert!(text.contains("firmware: UEFI"), "{text}");
    assert!(text.contains("/dev/vda"), "{text}");
    assert!(text.contains("block, grow"), "{text}");
    assert!(text.contains("mkswap"), "{text}");
    assert!(text.contains("label3"), "{text}");
}

/// A random partition: what it holds, its size in MiB, and used percent.
fn arb_part() -> impl Strategy<Value = (u8, u64, u64)> {
    (0u8..5, 1u64..3000, 0u64..=100)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Whatever the layout, target and options, a plan that is made keeps
    /// the invariants, and every source partition with content appears
    /// exactly once.
    #[test]
    fn plans_keep_their_invariants(
        parts in prop::collection::vec(arb_part(), 1..7),
        gpt in any::<bool>(),
        unaligned in any::<bool>(),
        target_mib in 10u64..20_000,
        firmware in prop::option::of(prop_oneof![Just(Firmware::Bios), Just(Firmware::Uefi)]),
        scheme in prop::option::of(prop_oneof![Just(TableKind::Gpt), Just(TableKind::Mbr)]),
    ) {
        let mut at = if unaligned { 63 * 512 } else { MIB };
        let mut built = Vec::new();
        for (i, &(holds, mib, pct)) in parts.iter().enumerate() {
            let number = if !gpt && i >= 3 { i as u32 + 2 } else { i as u32 + 1 };
            let size = mib * MIB - if unaligned { 512 * (mib % 7) } else { 0 };
            let holds = match holds {
                0 => Holds::Ext4 { used: size / 100 * pct },
                1 => Holds::Xfs,
                2 => Holds::Vfat,
                3 => Holds::Swap,
                _ => Holds::Unknown,
            };
            let logical = !gpt && i >= 3;
            let (kind, lead) = if gpt {
                let guid = match holds { Holds::Vfat => ESP, Holds::Swap => SWAP, _ => LINUX };
                (gpt_kind(number, guid), 0)
            } else {
                let code = match holds { Holds::Vfat => 0xef, Holds::Swap => 0x82, _ => 0x83 };
                (mbr_kind(code, logical), if logical { 512 } else { 0 })
            };
            at += lead;
            built.push(part(number, at, size, kind, holds));
            at += size;
        }
        if !gpt && parts.len() > 3 {
            let first = built[3].0.start - 512;
            let (mut c, _) = part(4, first, at - first, mbr_kind(0x05, false), Holds::Unknown);
            c.role = Role::Extended;
            built.push((c, PartitionContent::Extended));
        }
        let table = if gpt { gpt_table() } else { mbr_table() };
        let source = disk(at + MIB, table, built, BootArea::default());
        let options = PlanOptions { firmware, scheme, ..PlanOptions::default() };
        let targets = [target("/dev/vda", target_mib * MIB)];
        let r = plan(std::slice::from_ref(&source), &targets, &options);
        if let Err(PlanError::DoesNotFit { needed, available, .. } | PlanError::CannotShrink {
            needed, available, ..
        }) = &r {
            // The refusal says by how much: that much more fits.
            let more = [target("/dev/vda", targets[0].size + needed - available)];
            let again = plan(std::slice::from_ref(&source), &more, &options);
            prop_assert!(again.is_ok(), "{:?} after {:?}", again, r);
        }
        if let Ok(p) = r {
            check_invariants(&p);
            let DiskContent::Partitioned { layout, .. } = &source.content else { unreachable!() };
            let d = &p.disks[0];
            let to_mbr = matches!(d.table.as_ref().map(|t| &t.scheme), Some(Scheme::Mbr { .. }));
            for sp in &layout.partitions {
                let dropped = sp.role == Role::Extended && !to_mbr
                    || (to_mbr && sp.is_bios_boot());
                let n = d.steps.iter().filter(|s| s.source == Some(sp.number)).count();
                prop_assert_eq!(n, usize::from(!dropped), "partition {}", sp.number);
            }
            for s in &d.steps {
                let Some(sp) = layout.partitions.iter().find(|sp| Some(sp.number) == s.source) else {
                    continue;
                };
                match s.method {
                    Method::Block { .. } | Method::Raw => prop_assert!(s.size >= sp.size),
                    Method::Tree { mkfs } => {
                        let used = sp.filesystem.as_ref().and_then(|f| f.used).unwrap_or(0);
                        prop_assert!(s.size >= tree_min_size(used, mkfs));
                    }
                    _ => {}
                }
            }
        }
    }
}

#[test]
fn mbr_on_a_disk_over_2_tib_uses_what_it_can_address() {
    let d = plan_one(layout_a(), 3 << 40, &PlanOptions::default()).expect("fits");
    let root = step(&d, 1);
    assert_eq!(root.start + root.size, (2 << 40) - MIB);
    assert_eq!(root.method, Method::Block { grow: true });
    assert!(d
        .notes
        .iter()
        .any(|n| n.contains("MBR addresses no further")));
}

#[test]
fn mbr_to_gpt_keeps_logical_numbers_and_drops_the_container() {
    let options = with_firmware(Firmware::Uefi);
    let d = plan_one(layout_logical(), 10 * GIB, &options).expect("fits");
    assert_eq!(
        d.steps
            .iter()
            .map(|s| (s.number, s.source))
            .collect::<Vec<_>>(),
        vec![(1, Some(1)), (2, None), (5, Some(5)), (6, Some(6))]
    );
    assert_eq!(step(&d, 2).method, Method::NewEsp);
    assert_eq!(type_guid(&d, 5), SWAP);
}
