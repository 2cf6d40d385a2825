//! Planning one target disk: mapping, boot disk, table scheme, partitions,
//! sizes and methods.

use imaging::disk::{DiskLayout, FsType, Partition, PartitionTable};
use imaging::manifest::{BlockStream, Disk, DiskContent, PartitionImage};

use crate::plan::layout::{align_down, align_up};
use crate::plan::method::Source;
use crate::plan::partitioned;
use crate::plan::{
    DiskPlan, Firmware, FsConvert, HeadCopy, Method, PartitionStep, PlanError, TableKind,
    TargetDisk,
};

/// The `(source, target)` disk pairs: `explicit`, checked, or by order.
pub(crate) fn mapping(
    sources: usize,
    targets: usize,
    explicit: Option<&[(usize, usize)]>,
) -> Result<Vec<(usize, usize)>, PlanError> {
    if sources == 0 {
        return Err(PlanError::NoDisks);
    }
    let Some(pairs) = explicit else {
        if sources > targets {
            return Err(PlanError::TooFewTargets { sources, targets });
        }
        return Ok((0..sources).map(|i| (i, i)).collect());
    };
    let mut seen_source = vec![false; sources];
    let mut seen_target = vec![false; targets];
    for &(s, t) in pairs {
        for (what, index, seen) in [
            ("source", s, &mut seen_source),
            ("target", t, &mut seen_target),
        ] {
            let count = seen.len();
            let slot = seen
                .get_mut(index)
                .ok_or(PlanError::NoSuchDisk { what, index, count })?;
            if std::mem::replace(slot, true) {
                return Err(PlanError::MappedTwice { what, index });
            }
        }
    }
    if let Some(index) = seen_source.iter().position(|s| !s) {
        return Err(PlanError::Unmapped { index });
    }
    Ok(pairs.to_vec())
}

/// The layout of a partitioned disk.
fn layout_of(disk: &Disk) -> Option<&DiskLayout> {
    match &disk.content {
        DiskContent::Partitioned { layout, .. } => Some(layout),
        DiskContent::Whole { .. } => None,
    }
}

/// The source disk the machine boots from: the first (by index) with an
/// ESP, a BIOS boot partition or MBR boot code; else the first mapped.
pub(crate) fn boot_disk(disks: &[Disk], pairs: &[(usize, usize)]) -> usize {
    let mut mapped: Vec<usize> = pairs.iter().map(|&(s, _)| s).collect();
    mapped.sort_unstable();
    let boots = |i: &&usize| {
        layout_of(&disks[**i]).is_some_and(|l| {
            l.boot.esp.is_some() || l.boot.bios_boot.is_some() || l.boot.mbr_boot_code.is_some()
        })
    };
    let first = mapped.first().copied().unwrap_or(0);
    mapped.iter().find(boots).copied().unwrap_or(first)
}

/// The firmware a disk was set up for: UEFI with an ESP, else BIOS.
pub(crate) fn firmware_of(disk: &Disk) -> Firmware {
    match layout_of(disk).and_then(|l| l.boot.esp) {
        Some(_) => Firmware::Uefi,
        None => Firmware::Bios,
    }
}

/// Everything planning one target disk needs.
pub(crate) struct Context<'a> {
    /// The source disk's index.
    pub(crate) index: usize,
    /// The source disk.
    pub(crate) disk: &'a Disk,
    /// Where it goes.
    pub(crate) target: &'a TargetDisk,
    /// It is the boot disk.
    pub(crate) boot: bool,
    /// The target's firmware.
    pub(crate) firmware: Firmware,
    /// The scheme forced on partitioned disks.
    pub(crate) scheme: Option<TableKind>,
    /// File-system conversions (of every disk).
    pub(crate) convert: &'a [FsConvert],
}

impl Context<'_> {
    /// The target's sector size, checked.
    fn sector(&self) -> Result<u64, PlanError> {
        match self.target.logical_sector_size {
            512 | 4096 => Ok(u64::from(self.target.logical_sector_size)),
            s => Err(PlanError::SectorSize {
                target: self.target.path.clone(),
                sector_size: s,
            }),
        }
    }

    /// A plan for this disk with no table yet.
    pub(crate) fn empty_plan(&self) -> DiskPlan {
        DiskPlan {
            source: self.index,
            source_name: self.disk.name.clone(),
            target: self.target.path.clone(),
            target_size: self.target.size,
            boot: self.boot,
            table: None,
            copy_head: HeadCopy::default(),
            steps: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// The conversion asked for source partition `number`.
    fn convert_of(&self, number: u32) -> Option<FsType> {
        self.convert
            .iter()
            .find(|c| c.disk == self.index && c.number == number)
            .map(|c| c.to)
    }

    /// A refusal: the plan needs `needed` bytes and has `available`.
    pub(crate) fn does_not_fit(&self, needed: u64, available: u64, detail: String) -> PlanError {
        PlanError::DoesNotFit {
            disk: self.index,
            target: self.target.path.clone(),
            needed,
            available,
            detail,
        }
    }
}

/// Plans one source disk onto its target.
pub(crate) fn plan_disk(ctx: &Context) -> Result<DiskPlan, PlanError> {
    let sector = ctx.sector()?;
    match &ctx.disk.content {
        DiskContent::Whole { stream } => raw_disk(ctx, stream),
        DiskContent::Partitioned {
            layout, partitions, ..
        } if layout.table == PartitionTable::None => whole_fs(ctx, layout, partitions, sector),
        DiskContent::Partitioned {
            layout,
            head,
            partitions,
        } => partitioned::plan(ctx, layout, head, partitions, sector),
    }
}

/// A raw whole-disk capture: every byte, as it is.
fn raw_disk(ctx: &Context, stream: &BlockStream) -> Result<DiskPlan, PlanError> {
    if ctx.target.size < stream.size {
        return Err(ctx.does_not_fit(
            stream.size,
            ctx.target.size,
            " (a raw disk copy cannot shrink)".into(),
        ));
    }
    let mut plan = ctx.empty_plan();
    plan.steps.push(PartitionStep {
        number: 0,
        start: 0,
        size: stream.size,
        source: None,
        method: Method::Raw,
        fs: None,
    });
    if ctx.target.size > stream.size {
        plan.notes.push(format!(
            "the raw copy leaves the last {} bytes unused; a GPT in it keeps its backup \
             header where the source disk ended",
            ctx.target.size - stream.size
        ));
    }
    Ok(plan)
}

/// A file system on the whole disk (no table): it becomes the whole
/// target disk.
fn whole_fs(
    ctx: &Context,
    layout: &DiskLayout,
    partitions: &[PartitionImage],
    sector: u64,
) -> Result<DiskPlan, PlanError> {
    let mut plan = ctx.empty_plan();
    let Some(part) = layout.partitions.first() else {
        plan.notes
            .push("the source disk is empty: nothing to write".into());
        return Ok(plan);
    };
    let src = source(ctx, part, partitions, sector)?;
    let size = align_down(ctx.target.size, sector);
    let min = align_up(src.min_size(), sector);
    if size < min {
        return Err(shrink_refusal(ctx, &src, min, size, 0, size));
    }
    let (method, fs) = src.method(size);
    plan.steps.push(PartitionStep {
        number: 0,
        start: 0,
        size,
        source: Some(part.number),
        method,
        fs,
    });
    if ctx.boot && ctx.firmware == Firmware::Uefi {
        plan.notes.push(
            "a whole-disk file system has no table and no ESP: the target boots from \
             another disk"
                .into(),
        );
    }
    Ok(plan)
}

/// Source partition `part` with its stored content.
pub(crate) fn source<'a>(
    ctx: &Context,
    part: &'a Partition,
    partitions: &'a [PartitionImage],
    sector: u64,
) -> Result<Source<'a>, PlanError> {
    let content = partitions
        .iter()
        .find(|p| p.number == part.number)
        .ok_or_else(|| PlanError::BadImage {
            disk: ctx.index,
            why: format!("partition {} has no stored content", part.number),
        })?;
    Ok(Source {
        part,
        content: &content.content,
        convert: ctx.convert_of(part.number),
        target_sector: sector,
    })
}

/// The refusal for `src`, which needs `min` bytes and gets `room`: a
/// shrink its content cannot do, or a plain lack of space. `before` is
/// where it starts (the bytes the partitions before it take), `available`
/// the end of the target's usable area.
pub(crate) fn shrink_refusal(
    ctx: &Context,
    src: &Source,
    min: u64,
    room: u64,
    before: u64,
    available: u64,
) -> PlanError {
    let needed = before.saturating_add(min);
    if !src.derivable() && src.tree_only().is_none() && room < src.part.size {
        return PlanError::CannotShrink {
            disk: ctx.index,
            number: src.part.number,
            what: src.what(),
            size: src.part.size,
            room,
            target: ctx.target.path.clone(),
            needed,
            available: before.saturating_add(room),
        };
    }
    ctx.does_not_fit(
        needed,
        available,
        format!(
            " (partition {} with {} used bytes needs at least {min} bytes)",
            src.part.number,
            src.used()
        ),
    )
}
