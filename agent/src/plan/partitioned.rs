//! Planning a disk with a partition table: scheme, the partitions to
//! create, their numbers, sizes and places, and the head to copy.

use imaging::disk::{DiskLayout, FsType, Partition, PartitionKind, PartitionTable, Role};
use imaging::manifest::{BlockStream, PartitionImage};
use uuid::Uuid;

use crate::plan::disk::{shrink_refusal, source, Context};
use crate::plan::layout::{self, align_down, align_up, Slot, ALIGN, MAX_GAP};
use crate::plan::method::Source;
use crate::plan::partition_type::{self, BIOS_BOOT_GUID, ESP_CODE, ESP_GUID, EXTENDED_CODE};
use crate::plan::{
    DiskPlan, Firmware, FsTarget, HeadCopy, Method, PartitionStep, PlanError, TableKind,
    BIOS_BOOT_SIZE, NEW_ESP_SIZE,
};
use crate::table::{EntrySpec, PartSpec, Scheme, TableSpec};

/// The most GPT entries the table writer makes (the usual 128).
const GPT_MAX_NUMBER: u32 = 128;
/// MBR primary slots.
const MBR_PRIMARIES: u32 = 4;

/// A target partition before it is placed.
struct Item<'a> {
    /// The source partition it gets its content from.
    src: Option<Source<'a>>,
    /// For a partition the plan adds: `NewEsp` or `NewBiosBoot`.
    new: Option<Method>,
    /// Its number on the target; 0 until assigned.
    number: u32,
    /// Its table entry.
    entry: EntrySpec,
    /// Its size (the elastic one's is set last).
    size: u64,
}

impl Item<'_> {
    fn role(&self) -> Option<Role> {
        self.src.map(|s| s.part.role)
    }

    fn logical(&self) -> bool {
        matches!(self.entry, EntrySpec::Mbr { logical: true, .. })
    }

    fn slot(&self) -> Slot {
        Slot {
            size: self.size,
            logical: self.logical(),
        }
    }
}

/// A fresh GUID, lowercase and hyphenated.
fn new_guid() -> String {
    Uuid::new_v4().hyphenated().to_string()
}

/// The scheme of a source table.
fn kind_of(table: &PartitionTable) -> Option<TableKind> {
    match table {
        PartitionTable::Gpt { .. } => Some(TableKind::Gpt),
        PartitionTable::Mbr { .. } => Some(TableKind::Mbr),
        PartitionTable::None => None,
    }
}

/// Plans a partitioned source disk onto its target.
pub(crate) fn plan(
    ctx: &Context,
    layout: &DiskLayout,
    head: &BlockStream,
    partitions: &[PartitionImage],
    sector: u64,
) -> Result<DiskPlan, PlanError> {
    let from = kind_of(&layout.table).ok_or_else(|| PlanError::BadImage {
        disk: ctx.index,
        why: "a partitioned disk without a partition table".into(),
    })?;
    let uefi_on_mbr = ctx.boot && ctx.firmware == Firmware::Uefi && from == TableKind::Mbr;
    let to = ctx
        .scheme
        .unwrap_or(if uefi_on_mbr { TableKind::Gpt } else { from });
    let mut plan = ctx.empty_plan();
    let mut items = source_items(ctx, layout, partitions, sector, from, to, &mut plan.notes)?;
    add_boot_partitions(ctx, to, &mut items, &mut plan.notes);
    let container = number(ctx, layout, from, to, &mut items)?;

    let (copy_head, first) = head_copy(ctx, layout, head, from, to, &mut plan.notes);
    plan.copy_head = copy_head;
    let usable = layout::usable_end(to, ctx.target.size, sector);
    let starts = size_and_place(ctx, &mut items, first, usable, sector)?;
    if plan.copy_head.boot_code && from == TableKind::Gpt {
        // GRUB's boot.img names the sector core.img starts at.
        plan.copy_head.boot_code = items.iter().zip(&starts).any(|(i, &start)| {
            i.src
                .is_some_and(|s| s.part.role == Role::BiosBoot && s.part.start == start)
        });
    }
    if ctx.boot && ctx.firmware == Firmware::Bios && !plan.copy_head.boot_code {
        plan.notes.push(
            "no GRUB boot code is copied from the image (there is none, or the table or its \
             BIOS boot partition changed): the OS adaptation must run grub-install"
                .into(),
        );
    }
    let end = items
        .iter()
        .zip(&starts)
        .map(|(i, s)| s + i.size)
        .max()
        .unwrap_or(first);
    let left = align_down(ctx.target.size, sector).saturating_sub(end);
    if left > 2 * ALIGN {
        let why = if usable < align_down(ctx.target.size, sector).saturating_sub(ALIGN) {
            "MBR addresses no further"
        } else {
            "no partition holds an ext2/3/4 or xfs file system to grow"
        };
        plan.notes
            .push(format!("{left} bytes at the end stay unused: {why}"));
    }
    let (parts, steps) = build(items, &starts, container);
    plan.table = Some(TableSpec {
        scheme: scheme(layout, to),
        sector_size: ctx.target.logical_sector_size,
        disk_size: ctx.target.size,
        partitions: parts,
    });
    plan.steps = steps;
    Ok(plan)
}

/// The source's partitions in physical order, without the extended
/// container, each with its entry in the target scheme.
fn source_items<'a>(
    ctx: &Context,
    layout: &'a DiskLayout,
    partitions: &'a [PartitionImage],
    sector: u64,
    from: TableKind,
    to: TableKind,
    notes: &mut Vec<String>,
) -> Result<Vec<Item<'a>>, PlanError> {
    let mut parts: Vec<&Partition> = layout
        .partitions
        .iter()
        .filter(|p| p.role != Role::Extended)
        .collect();
    parts.sort_by_key(|p| p.start);
    let mut items = Vec::with_capacity(parts.len() + 1);
    for p in parts {
        if to == TableKind::Mbr && p.role == Role::BiosBoot {
            notes.push(format!(
                "BIOS boot partition {} is left out: on MBR, GRUB lives in the gap after the MBR",
                p.number
            ));
            continue;
        }
        let src = source(ctx, p, partitions, sector)?;
        let fixed = align_up(p.size, sector);
        let size = match src.tree_only() {
            Some(_) => fixed.max(align_up(src.min_size(), sector)),
            None => fixed,
        };
        items.push(Item {
            src: Some(src),
            new: None,
            number: if from == to || to == TableKind::Gpt {
                p.number
            } else {
                0
            },
            entry: entry(ctx, p, to)?,
            size,
        });
    }
    if from != to {
        notes.push(match to {
            TableKind::Gpt => "MBR → GPT: the disk and its partitions get new GUIDs; \
                 PARTUUID=<signature>-NN references must be rewritten (file-system UUIDs and \
                 labels are kept)"
                .into(),
            TableKind::Mbr => "GPT → MBR: partitions are renumbered and get PARTUUIDs \
                 <signature>-NN; /dev/sdXN and PARTUUID references must be rewritten \
                 (file-system UUIDs and labels are kept)"
                .into(),
        });
    }
    Ok(items)
}

/// The table entry of source partition `p` in scheme `to`.
fn entry(ctx: &Context, p: &Partition, to: TableKind) -> Result<EntrySpec, PlanError> {
    let refuse = |why: String| PlanError::Scheme {
        disk: ctx.index,
        target: ctx.target.path.clone(),
        why,
    };
    Ok(match (&p.kind, to) {
        (
            PartitionKind::Gpt {
                type_guid,
                unique_guid,
                name,
                attributes,
                ..
            },
            TableKind::Gpt,
        ) => EntrySpec::Gpt {
            type_guid: type_guid.clone(),
            unique_guid: unique_guid.clone(),
            name: name.clone(),
            attributes: *attributes,
        },
        (
            PartitionKind::Mbr {
                type_code,
                bootable,
                logical,
                ..
            },
            TableKind::Mbr,
        ) => EntrySpec::Mbr {
            type_code: *type_code,
            bootable: *bootable,
            logical: *logical,
        },
        (PartitionKind::Mbr { type_code, .. }, TableKind::Gpt) => EntrySpec::Gpt {
            type_guid: partition_type::gpt_type(*type_code)
                .ok_or_else(|| {
                    refuse(format!(
                        "partition {} has MBR type {type_code:#04x}, which has no GPT type",
                        p.number
                    ))
                })?
                .to_string(),
            unique_guid: new_guid(),
            name: String::new(),
            attributes: 0,
        },
        (PartitionKind::Gpt { type_guid, .. }, TableKind::Mbr) => EntrySpec::Mbr {
            type_code: partition_type::mbr_type(type_guid).ok_or_else(|| {
                refuse(format!(
                    "partition {} has GPT type {type_guid}, which has no MBR type code",
                    p.number
                ))
            })?,
            bootable: false,
            logical: false,
        },
        (PartitionKind::Whole, _) => {
            return Err(PlanError::BadImage {
                disk: ctx.index,
                why: format!("partition {} is a whole disk inside a table", p.number),
            })
        }
    })
}

/// Adds the partition the target's firmware needs on the boot disk, in
/// front: an ESP for UEFI, a BIOS boot partition for BIOS on GPT.
fn add_boot_partitions(
    ctx: &Context,
    to: TableKind,
    items: &mut Vec<Item>,
    notes: &mut Vec<String>,
) {
    if !ctx.boot {
        return;
    }
    let has = |role| items.iter().any(|i| i.role() == Some(role));
    let (method, size, guid, code, name) = match ctx.firmware {
        Firmware::Uefi if !has(Role::Esp) => (
            Method::NewEsp,
            NEW_ESP_SIZE,
            ESP_GUID,
            ESP_CODE,
            "EFI System Partition",
        ),
        Firmware::Bios if to == TableKind::Gpt && !has(Role::BiosBoot) => (
            Method::NewBiosBoot,
            BIOS_BOOT_SIZE,
            BIOS_BOOT_GUID,
            0,
            "BIOS boot partition",
        ),
        _ => return,
    };
    let entry = match to {
        TableKind::Gpt => EntrySpec::Gpt {
            type_guid: guid.into(),
            unique_guid: new_guid(),
            name: name.into(),
            attributes: 0,
        },
        TableKind::Mbr => EntrySpec::Mbr {
            type_code: code,
            bootable: false,
            logical: false,
        },
    };
    notes.push(format!(
        "a new {name} of {size} bytes goes first: the OS adaptation installs the boot loader \
         on it"
    ));
    items.insert(
        0,
        Item {
            src: None,
            new: Some(method),
            number: 0,
            entry,
            size,
        },
    );
}

/// The extended container of an MBR target: its number, type code and
/// source partition.
type Container = Option<(u32, u8, Option<u32>)>;

/// Gives every item its target number and returns the extended container
/// an MBR target needs.
fn number(
    ctx: &Context,
    layout: &DiskLayout,
    from: TableKind,
    to: TableKind,
    items: &mut [Item],
) -> Result<Container, PlanError> {
    let refuse = |why: String| PlanError::Scheme {
        disk: ctx.index,
        target: ctx.target.path.clone(),
        why,
    };
    let source_container = layout.partitions.iter().find(|p| p.role == Role::Extended);
    if to == TableKind::Mbr && from == TableKind::Gpt {
        let split = items.len() > MBR_PRIMARIES as usize;
        let mut next = 1;
        for item in items.iter_mut() {
            if split && next == MBR_PRIMARIES {
                next += 1;
            }
            item.number = next;
            if let EntrySpec::Mbr { logical, .. } = &mut item.entry {
                *logical = next > MBR_PRIMARIES;
            }
            next += 1;
        }
        return Ok(split.then_some((MBR_PRIMARIES, EXTENDED_CODE, None)));
    }
    let container = match source_container {
        Some(p) if to == TableKind::Mbr => {
            let code = match p.kind {
                PartitionKind::Mbr { type_code, .. } => type_code,
                _ => EXTENDED_CODE,
            };
            Some((p.number, code, Some(p.number)))
        }
        _ => None,
    };
    let mut used: Vec<u32> = items.iter().map(|i| i.number).collect();
    used.extend(container.map(|c| c.0));
    for item in items.iter_mut().filter(|i| i.number == 0) {
        let limit = match to {
            TableKind::Gpt => GPT_MAX_NUMBER,
            TableKind::Mbr => MBR_PRIMARIES,
        };
        let free = (1..=limit).find(|n| !used.contains(n)).ok_or_else(|| {
            refuse(format!(
                "all {limit} partition slots are taken; the new partition needs one"
            ))
        })?;
        item.number = free;
        used.push(free);
    }
    if let Some(big) = items
        .iter()
        .find(|i| to == TableKind::Gpt && i.number > GPT_MAX_NUMBER)
    {
        return Err(refuse(format!(
            "partition {} cannot be kept: the GPT holds {GPT_MAX_NUMBER} entries",
            big.number
        )));
    }
    let logical: Vec<usize> = (0..items.len()).filter(|&i| items[i].logical()).collect();
    if let (Some(first), Some(last)) = (logical.first(), logical.last()) {
        if last - first + 1 != logical.len() {
            return Err(refuse(
                "the logical partitions are not next to each other on the source".into(),
            ));
        }
        if container.is_none() {
            return Err(PlanError::BadImage {
                disk: ctx.index,
                why: "logical partitions without an extended partition".into(),
            });
        }
    }
    Ok(container.filter(|_| !logical.is_empty()))
}

/// What of the head to copy, and where the first partition may start
/// (after the gap copied).
fn head_copy(
    ctx: &Context,
    layout: &DiskLayout,
    head: &BlockStream,
    from: TableKind,
    to: TableKind,
    notes: &mut Vec<String>,
) -> (HeadCopy, u64) {
    let mut copy = HeadCopy::default();
    if ctx.firmware != Firmware::Bios || from != to {
        return (copy, ALIGN);
    }
    copy.boot_code = layout.boot.mbr_boot_code.is_some() && head.size >= layout::MBR_BOOT_CODE;
    let mut first = ALIGN;
    if let (TableKind::Mbr, Some((start, end)), true) =
        (to, layout.boot.gap, layout.boot.gap_has_data)
    {
        if end <= head.size && end <= MAX_GAP {
            copy.gap = Some((start, end));
            first = first.max(align_up(end, ALIGN));
        } else {
            notes.push(format!(
                "the post-MBR gap [{start}, {end}) is not copied (larger than {MAX_GAP} bytes or \
                 the stored head): GRUB must be reinstalled"
            ));
            copy.boot_code = false;
        }
    }
    (copy, first)
}

/// Sizes the elastic partition and places everything; returns the
/// starts.
fn size_and_place(
    ctx: &Context,
    items: &mut [Item],
    first: u64,
    usable: u64,
    sector: u64,
) -> Result<Vec<u64>, PlanError> {
    let elastic = items
        .iter()
        .enumerate()
        .rev()
        .filter_map(|(n, i)| Some((n, i.src?)))
        .filter(|(_, s)| s.part.role == Role::Linux && s.content.stream().is_some())
        .filter(|(_, s)| {
            s.part.filesystem.as_ref().is_some_and(|f| {
                f.problem.is_none()
                    && matches!(
                        f.fs_type,
                        FsType::Ext2 | FsType::Ext3 | FsType::Ext4 | FsType::Xfs
                    )
            })
        })
        .max_by_key(|(_, s)| (s.used(), s.part.size))
        .map(|(n, _)| n);
    if let Some(e) = elastic {
        items[e].size = 0;
    }
    let slots: Vec<Slot> = items.iter().map(Item::slot).collect();
    let (_, end0) = layout::place(first, &slots);
    let fixed = || {
        let numbers: Vec<String> = items
            .iter()
            .enumerate()
            .filter(|&(n, _)| Some(n) != elastic)
            .map(|(_, i)| i.number.to_string())
            .collect();
        format!(
            " (fixed partitions {} end at byte {end0})",
            numbers.join(", ")
        )
    };
    match elastic {
        Some(e) => {
            let src = items[e].src.expect("the elastic partition has a source");
            let min = align_up(src.min_size(), ALIGN);
            if end0 > usable {
                return Err(ctx.does_not_fit(end0.saturating_add(min), usable, fixed()));
            }
            let room = align_down(usable - end0, ALIGN);
            if room < min {
                return Err(shrink_refusal(ctx, &src, min, room, end0, usable));
            }
            items[e].size = room;
        }
        None if end0 > usable => return Err(ctx.does_not_fit(end0, usable, fixed())),
        None => {}
    }
    let slots: Vec<Slot> = items.iter().map(Item::slot).collect();
    let (starts, end) = layout::place(first, &slots);
    debug_assert!(end <= usable && starts.iter().all(|s| s % sector == 0));
    Ok(starts)
}

/// The table entries and the steps, in table order.
fn build(
    items: Vec<Item>,
    starts: &[u64],
    container: Container,
) -> (Vec<PartSpec>, Vec<PartitionStep>) {
    let mut parts = Vec::with_capacity(items.len() + 1);
    let mut steps = Vec::with_capacity(items.len() + 1);
    let mut logical_span: Option<(u64, u64)> = None;
    for (mut item, &start) in items.into_iter().zip(starts) {
        let (method, fs) = match (item.src, item.new.take()) {
            (Some(src), _) => src.method(item.size),
            (None, Some(Method::NewEsp)) => (
                Method::NewEsp,
                Some(FsTarget {
                    fs_type: FsType::Vfat,
                    uuid: Some(new_vfat_serial()),
                    label: None,
                }),
            ),
            (None, new) => (new.unwrap_or(Method::None), None),
        };
        if item.logical() {
            let end = start + item.size;
            let (s, e) = logical_span.get_or_insert((start - ALIGN, end));
            *e = (*e).max(end);
            *s = (*s).min(start - ALIGN);
        }
        parts.push(PartSpec {
            number: item.number,
            start,
            size: item.size,
            entry: item.entry,
        });
        steps.push(PartitionStep {
            number: item.number,
            start,
            size: item.size,
            source: item.src.map(|s| s.part.number),
            method,
            fs,
        });
    }
    if let (Some((number, type_code, source)), Some((start, end))) = (container, logical_span) {
        parts.push(PartSpec {
            number,
            start,
            size: end - start,
            entry: EntrySpec::Mbr {
                type_code,
                bootable: false,
                logical: false,
            },
        });
        steps.push(PartitionStep {
            number,
            start,
            size: end - start,
            source,
            method: Method::None,
            fs: None,
        });
    }
    parts.sort_by_key(|p| p.number);
    steps.sort_by_key(|s| s.number);
    (parts, steps)
}

/// A fresh vfat volume ID in blkid's `XXXX-XXXX` form.
fn new_vfat_serial() -> String {
    let b = Uuid::new_v4().into_bytes();
    format!("{:02X}{:02X}-{:02X}{:02X}", b[0], b[1], b[2], b[3])
}

/// The target's scheme with its identifier: the source's when the scheme
/// is kept, a new one otherwise.
fn scheme(layout: &DiskLayout, to: TableKind) -> Scheme {
    match (&layout.table, to) {
        (PartitionTable::Gpt { disk_guid, .. }, TableKind::Gpt) => Scheme::Gpt {
            disk_guid: disk_guid.clone(),
        },
        (PartitionTable::Mbr { disk_signature, .. }, TableKind::Mbr) => Scheme::Mbr {
            disk_signature: disk_signature.clone(),
        },
        (_, TableKind::Gpt) => Scheme::Gpt {
            disk_guid: new_guid(),
        },
        (_, TableKind::Mbr) => {
            let b = Uuid::new_v4().into_bytes();
            Scheme::Mbr {
                disk_signature: hex_signature([b[0], b[1], b[2], b[3] | 1]),
            }
        }
    }
}

/// Eight lowercase hex digits (never all zero: the low bit is set).
fn hex_signature(b: [u8; 4]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
