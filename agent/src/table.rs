//! Partition tables to write: the target side of a deploy plan.
//!
//! A [`TableSpec`] says exactly what a target disk's table will hold: the
//! scheme with its disk identifier, and every partition with its byte range
//! and its type, GUIDs, name and flags. The planner (`plan`) produces one
//! per target disk; the writer in this module puts it on the disk with the
//! `gpt` crate (protective MBR, primary and backup headers and entries) or
//! `mbrman` (primary entries, and an extended partition with its EBR chain
//! for logical partitions).
//!
//! [`write_table`] validates a spec completely before it writes a byte:
//! every range sector-aligned, inside the disk and the GPT's usable area,
//! no overlaps, MBR LBAs within 32 bits (2 TiB with 512-byte sectors), at
//! most four primaries and one extended partition holding every logical
//! one. It then writes only table sectors: the MBR boot code (bytes 0-439,
//! where the deploy puts GRUB's `boot.img`) is never touched, and stale GPT
//! headers (and their entry arrays, where no new partition lies) are zeroed
//! when an MBR replaces a GPT, so `blkid` and the kernel see one table.
//! Partition contents are not touched: write the table first, then fill
//! the partitions.

use std::fs::File;
use std::io::{self, Cursor, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

use serde::{Deserialize, Serialize};

/// The table of one target disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSpec {
    /// GPT or MBR, with the disk identifier to keep.
    pub scheme: Scheme,
    /// The logical sector size the LBAs count in (512 or 4096).
    pub sector_size: u32,
    /// The target disk's size in bytes.
    pub disk_size: u64,
    /// The partitions, in table order (GPT entry order; MBR primaries
    /// 1-4, then logical partitions from 5).
    pub partitions: Vec<PartSpec>,
}

/// A partition-table scheme.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scheme", rename_all = "kebab-case")]
pub enum Scheme {
    /// A GUID partition table.
    Gpt {
        /// The disk GUID (lowercase, hyphenated).
        disk_guid: String,
    },
    /// A DOS/MBR table.
    Mbr {
        /// The 32-bit disk signature as 8 lowercase hex digits.
        disk_signature: String,
    },
}

/// One partition to create.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartSpec {
    /// The number Linux will give it (`sdaN`): GPT entry index + 1; MBR
    /// 1-4 primaries, 5 and up logical.
    pub number: u32,
    /// Byte offset of its first byte (a multiple of the sector size; the
    /// planner aligns to 1 MiB).
    pub start: u64,
    /// Size in bytes (a multiple of the sector size).
    pub size: u64,
    /// Its table entry.
    pub entry: EntrySpec,
}

/// What goes in the table entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum EntrySpec {
    /// A GPT entry.
    Gpt {
        /// Partition type GUID (lowercase, hyphenated).
        type_guid: String,
        /// The partition's own GUID (PARTUUID), kept from the source.
        unique_guid: String,
        /// The partition name.
        name: String,
        /// Attribute flags.
        attributes: u64,
    },
    /// An MBR entry.
    Mbr {
        /// The type byte.
        type_code: u8,
        /// The boot indicator (0x80).
        bootable: bool,
        /// A logical partition inside the extended partition (which the
        /// table lists as its own primary entry with type 0x05 or 0x0f).
        logical: bool,
    },
}

/// Why a table could not be written.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The spec as a whole is unusable.
    #[error("partition table for {disk}: {reason}")]
    Invalid {
        /// The disk, for messages.
        disk: String,
        /// What is wrong.
        reason: String,
    },
    /// One partition of the spec is unusable.
    #[error("partition table for {disk}: partition {number} (bytes {start}..{end}): {reason}")]
    Partition {
        /// The disk, for messages.
        disk: String,
        /// The partition's number.
        number: u32,
        /// Its first byte.
        start: u64,
        /// One past its last byte.
        end: u64,
        /// What is wrong.
        reason: String,
    },
    /// The disk is not the size the table was planned for.
    #[error("{disk} is {actual} bytes, but its partition table was planned for {planned} bytes")]
    SizeMismatch {
        /// The disk, for messages.
        disk: String,
        /// Its size.
        actual: u64,
        /// The spec's `disk_size`.
        planned: u64,
    },
    /// Reading, writing or flushing the disk failed.
    #[error("{action} {disk} at byte {offset}: {source}")]
    Io {
        /// What was being done ("writing the MBR of", …).
        action: &'static str,
        /// The disk, for messages.
        disk: String,
        /// Where.
        offset: u64,
        /// The error.
        source: io::Error,
    },
    /// The `gpt` or `mbrman` crate refused or failed.
    #[error("writing the {scheme} of {disk} at byte {offset}: {reason}")]
    Crate {
        /// "GPT" or "MBR".
        scheme: &'static str,
        /// The disk, for messages.
        disk: String,
        /// Where it was writing.
        offset: u64,
        /// The crate's error.
        reason: String,
    },
}

/// The largest partition number a GPT written here may have (entry-array
/// size the survey accepts).
const MAX_GPT_NUMBER: u32 = imaging::disk::table::MAX_GPT_ENTRIES;
/// Entries a GPT gets at least (the UEFI minimum, 16 KiB of entries).
const MIN_GPT_ENTRIES: u32 = 128;
/// The size of one GPT entry (the only size the survey reads).
const GPT_ENTRY_SIZE: u32 = 128;
/// MBR LBAs and lengths are 32-bit; partitions must end by this sector.
const MBR_MAX_SECTORS: u64 = 1 << 32;
/// Bytes 0-439 of the MBR hold boot code, which [`write_table`] leaves alone.
const MBR_BOOT_CODE_END: u64 = 440;
/// The classic CHS geometry fdisk writes for LBA disks (255 heads, 63
/// sectors per track), capped at cylinder 1023.
const CHS_HEADS: u64 = 255;
const CHS_SECTORS: u64 = 63;

/// Writes `spec` onto `disk` (an image file or block device opened for
/// writing, exactly `spec.disk_size` bytes) and flushes it.
///
/// GPT: protective MBR (partition records and signature only), the entry
/// array at LBA 2 and before the backup header, the backup header at the
/// last LBA and the primary at LBA 1, with the spec's disk GUID and every
/// partition's type GUID, unique GUID, name, attributes and LBAs; entry
/// `number - 1` holds partition `number`, so gaps in the numbering stay.
///
/// MBR: the disk signature, the four primary entries (slot = number) with
/// type and boot flag, and for logical partitions one EBR each: the first at
/// the extended partition's first sector, each further one in the sector
/// right after the previous logical partition. CHS fields use 255/63
/// geometry, capped like fdisk's.
///
/// Nothing is written when the spec is invalid; the error names the disk
/// and the partition.
pub fn write_table(
    disk: &File,
    path_for_messages: &str,
    spec: &TableSpec,
) -> Result<(), TableError> {
    let name = path_for_messages.to_string();
    let mut dev = disk;
    let actual = dev.seek(SeekFrom::End(0)).map_err(|e| TableError::Io {
        action: "sizing",
        disk: name.clone(),
        offset: 0,
        source: e,
    })?;
    if actual != spec.disk_size {
        return Err(TableError::SizeMismatch {
            disk: name,
            actual,
            planned: spec.disk_size,
        });
    }
    let w = Writer { disk, name, spec };
    match &spec.scheme {
        Scheme::Gpt { disk_guid } => {
            let guid = w.parse_guid(disk_guid, "disk GUID")?;
            let parts = w.validate_gpt()?;
            w.write_gpt(guid, &parts)?;
        }
        Scheme::Mbr { disk_signature } => {
            let sig = w.parse_signature(disk_signature)?;
            let mbr = w.validate_mbr(sig)?;
            w.wipe_stale_gpt()?;
            w.write_mbr(mbr)?;
        }
    }
    disk.sync_all().map_err(|e| w.io("flushing", 0, e))
}

/// One validated GPT entry.
struct GptPart {
    index: u32,
    entry: gpt::partition::Partition,
}

/// The spec being written, with the disk and its name for messages.
struct Writer<'a> {
    disk: &'a File,
    name: String,
    spec: &'a TableSpec,
}

impl Writer<'_> {
    fn invalid(&self, reason: impl Into<String>) -> TableError {
        TableError::Invalid {
            disk: self.name.clone(),
            reason: reason.into(),
        }
    }

    fn bad_part(&self, p: &PartSpec, reason: impl Into<String>) -> TableError {
        TableError::Partition {
            disk: self.name.clone(),
            number: p.number,
            start: p.start,
            end: p.start.saturating_add(p.size),
            reason: reason.into(),
        }
    }

    fn io(&self, action: &'static str, offset: u64, source: io::Error) -> TableError {
        TableError::Io {
            action,
            disk: self.name.clone(),
            offset,
            source,
        }
    }

    fn krate(&self, scheme: &'static str, offset: u64, reason: impl ToString) -> TableError {
        TableError::Crate {
            scheme,
            disk: self.name.clone(),
            offset,
            reason: reason.to_string(),
        }
    }

    fn ss(&self) -> u64 {
        u64::from(self.spec.sector_size)
    }

    fn sectors(&self) -> u64 {
        self.spec.disk_size / self.ss()
    }

    fn pwrite(&self, action: &'static str, offset: u64, bytes: &[u8]) -> Result<(), TableError> {
        self.disk
            .write_all_at(bytes, offset)
            .map_err(|e| self.io(action, offset, e))
    }

    fn parse_guid(&self, s: &str, what: &str) -> Result<uuid::Uuid, TableError> {
        let g = uuid::Uuid::parse_str(s)
            .map_err(|e| self.invalid(format!("{what} {s:?} is not a GUID: {e}")))?;
        if g.is_nil() {
            return Err(self.invalid(format!("{what} is the nil GUID")));
        }
        Ok(g)
    }

    fn parse_signature(&self, s: &str) -> Result<[u8; 4], TableError> {
        let v = (s.len() == 8)
            .then(|| u32::from_str_radix(s, 16).ok())
            .flatten()
            .ok_or_else(|| self.invalid(format!("disk signature {s:?} is not 8 hex digits")))?;
        Ok(v.to_le_bytes())
    }

    /// Checks what both schemes require: sector size, disk size, every
    /// partition sector-aligned, non-empty, inside the disk, with the
    /// entry kind of the scheme and a unique number.
    fn validate_common(&self, gpt: bool) -> Result<(), TableError> {
        let ss = self.spec.sector_size;
        if ss != 512 && ss != 4096 {
            return Err(self.invalid(format!("sector size {ss} (512 or 4096 supported)")));
        }
        if self.spec.disk_size % self.ss() != 0 || self.sectors() < 3 {
            return Err(self.invalid(format!(
                "disk size {} is not a whole number of {ss}-byte sectors (at least 3)",
                self.spec.disk_size
            )));
        }
        let mut numbers = std::collections::BTreeSet::new();
        for p in &self.spec.partitions {
            if !numbers.insert(p.number) {
                return Err(self.bad_part(p, "its number appears twice"));
            }
            if p.size == 0 {
                return Err(self.bad_part(p, "it is empty"));
            }
            if p.start % self.ss() != 0 || p.size % self.ss() != 0 {
                return Err(self.bad_part(p, format!("not aligned to {ss}-byte sectors")));
            }
            if p.start
                .checked_add(p.size)
                .is_none_or(|e| e > self.spec.disk_size)
            {
                return Err(self.bad_part(
                    p,
                    format!("it ends beyond the {}-byte disk", self.spec.disk_size),
                ));
            }
            if matches!(p.entry, EntrySpec::Gpt { .. }) != gpt {
                return Err(self.bad_part(
                    p,
                    format!(
                        "its entry is for the other scheme than the {} table",
                        if gpt { "GPT" } else { "MBR" }
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Fails when two of `parts` share a byte.
    fn no_overlap<'p>(
        &self,
        parts: impl IntoIterator<Item = &'p PartSpec>,
    ) -> Result<(), TableError> {
        let mut sorted: Vec<&PartSpec> = parts.into_iter().collect();
        sorted.sort_by_key(|p| p.start);
        for pair in sorted.windows(2) {
            if pair[0].start + pair[0].size > pair[1].start {
                return Err(self.bad_part(
                    pair[1],
                    format!(
                        "it overlaps partition {} (bytes {}..{})",
                        pair[0].number,
                        pair[0].start,
                        pair[0].start + pair[0].size
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The GPT headers (primary, backup) for this disk with `entries`
    /// entries.
    fn gpt_headers(
        &self,
        guid: uuid::Uuid,
        entries: u32,
    ) -> Result<(gpt::header::Header, gpt::header::Header), TableError> {
        let lb = self.lb()?;
        let primary = gpt::header::HeaderBuilder::new()
            .disk_guid(guid)
            .backup_lba(self.sectors() - 1)
            .num_parts(entries)
            .part_size(GPT_ENTRY_SIZE)
            .build(lb)
            .map_err(|e| self.invalid(format!("no room for a GPT: {e}")))?;
        let backup = gpt::header::HeaderBuilder::from_header(&primary)
            .primary(false)
            .build(lb)
            .map_err(|e| self.invalid(format!("no room for a GPT: {e}")))?;
        Ok((primary, backup))
    }

    fn lb(&self) -> Result<gpt::disk::LogicalBlockSize, TableError> {
        gpt::disk::LogicalBlockSize::try_from(self.ss())
            .map_err(|e| self.invalid(format!("sector size {}: {e}", self.ss())))
    }

    fn entry_count(&self) -> u32 {
        let max = self
            .spec
            .partitions
            .iter()
            .map(|p| p.number)
            .max()
            .unwrap_or(0);
        max.max(MIN_GPT_ENTRIES)
    }

    fn validate_gpt(&self) -> Result<Vec<GptPart>, TableError> {
        self.validate_common(true)?;
        // Headers built only to learn the usable area; the GUID is unused.
        let (h, _) = self.gpt_headers(uuid::Uuid::nil(), self.entry_count())?;
        let ss = self.ss();
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::with_capacity(self.spec.partitions.len());
        for p in &self.spec.partitions {
            let EntrySpec::Gpt {
                type_guid,
                unique_guid,
                name,
                attributes,
            } = &p.entry
            else {
                unreachable!("validate_common checked the entry kinds");
            };
            if p.number == 0 || p.number > MAX_GPT_NUMBER {
                return Err(self.bad_part(p, format!("GPT numbers run from 1 to {MAX_GPT_NUMBER}")));
            }
            let (first, last) = (p.start / ss, (p.start + p.size) / ss - 1);
            if first < h.first_usable || last > h.last_usable {
                return Err(self.bad_part(
                    p,
                    format!(
                        "LBAs {first}..={last} are outside the GPT's usable LBAs {}..={}",
                        h.first_usable, h.last_usable
                    ),
                ));
            }
            let ty = uuid::Uuid::parse_str(type_guid)
                .map_err(|e| self.bad_part(p, format!("type GUID {type_guid:?}: {e}")))?;
            if ty.is_nil() {
                return Err(self.bad_part(p, "the nil type GUID marks an unused entry"));
            }
            let id = uuid::Uuid::parse_str(unique_guid)
                .map_err(|e| self.bad_part(p, format!("unique GUID {unique_guid:?}: {e}")))?;
            if id.is_nil() || !seen.insert(id) {
                return Err(self.bad_part(p, format!("unique GUID {id} is nil or used twice")));
            }
            if name.encode_utf16().count() > 36 {
                return Err(self.bad_part(p, format!("name {name:?} exceeds 36 UTF-16 units")));
            }
            out.push(GptPart {
                index: p.number - 1,
                entry: gpt::partition::Partition {
                    part_type_guid: gpt::partition_types::Type {
                        guid: ty,
                        os: gpt::partition_types::OperatingSystem::None,
                    },
                    part_guid: id,
                    first_lba: first,
                    last_lba: last,
                    flags: *attributes,
                    name: name.clone(),
                },
            });
        }
        self.no_overlap(&self.spec.partitions)?;
        Ok(out)
    }

    /// Writes the entry arrays, the backup then the primary header, then
    /// the protective MBR's partition records.
    fn write_gpt(&self, guid: uuid::Uuid, parts: &[GptPart]) -> Result<(), TableError> {
        let lb = self.lb()?;
        let ss = self.ss();
        let entries = self.entry_count();
        let (mut primary, mut backup) = self.gpt_headers(guid, entries)?;
        let mut array = Cursor::new(vec![0u8; (entries * GPT_ENTRY_SIZE) as usize]);
        for p in parts {
            p.entry
                .write_to_device(&mut array, u64::from(p.index), 0, lb, GPT_ENTRY_SIZE)
                .map_err(|e| self.krate("GPT", primary.part_start * ss, e))?;
        }
        let array = array.into_inner();
        self.pwrite(
            "writing the GPT entries of",
            primary.part_start * ss,
            &array,
        )?;
        self.pwrite(
            "writing the backup GPT entries of",
            backup.part_start * ss,
            &array,
        )?;
        let mut dev = self.disk;
        backup
            .write_backup(&mut dev, lb)
            .map_err(|e| self.krate("GPT", backup.current_lba * ss, e))?;
        primary
            .write_primary(&mut dev, lb)
            .map_err(|e| self.krate("GPT", ss, e))?;
        let pmbr_sectors = u32::try_from(self.sectors() - 1).unwrap_or(u32::MAX);
        gpt::mbr::ProtectiveMBR::with_lb_size(pmbr_sectors)
            .update_conservative(&mut dev)
            .map_err(|e| self.krate("GPT", 446, e))?;
        Ok(())
    }

    fn validate_mbr(&self, sig: [u8; 4]) -> Result<mbrman::MBR, TableError> {
        self.validate_common(false)?;
        let ss = self.ss();
        let mut primaries = Vec::new();
        let mut logicals = Vec::new();
        let mut extended: Option<&PartSpec> = None;
        for p in &self.spec.partitions {
            let EntrySpec::Mbr {
                type_code, logical, ..
            } = p.entry
            else {
                unreachable!("validate_common checked the entry kinds");
            };
            if (p.start + p.size) / ss > MBR_MAX_SECTORS {
                return Err(
                    self.bad_part(p, "it ends beyond LBA 2^32, the limit of an MBR (use GPT)")
                );
            }
            if type_code == 0 {
                return Err(self.bad_part(p, "type 0x00 marks an unused entry"));
            }
            if p.start < ss {
                return Err(self.bad_part(p, "it covers the MBR sector"));
            }
            let ext = is_extended(type_code);
            match (logical, p.number) {
                (false, 1..=4) => primaries.push(p),
                (true, n) if n >= 5 && !ext => logicals.push(p),
                (false, _) => return Err(self.bad_part(p, "primary partitions are numbered 1-4")),
                (true, _) => {
                    return Err(self.bad_part(
                        p,
                        "logical partitions are numbered from 5 and cannot be extended",
                    ))
                }
            }
            if ext && extended.replace(p).is_some() {
                return Err(self.bad_part(p, "a second extended partition"));
            }
        }
        self.no_overlap(primaries.iter().copied())?;
        logicals.sort_by_key(|p| p.number);
        if logicals.len() > imaging::disk::table::MAX_LOGICAL {
            return Err(self.invalid(format!(
                "{} logical partitions (at most {})",
                logicals.len(),
                imaging::disk::table::MAX_LOGICAL
            )));
        }
        let mut mbr = mbrman::MBR {
            sector_size: self.spec.sector_size,
            header: mbrman::MBRHeader::new(sig),
            logical_partitions: Vec::new(),
            align: 1,
            cylinders: 0,
            heads: 0,
            sectors: 0,
            disk_size: u32::try_from(self.sectors()).unwrap_or(u32::MAX),
        };
        for p in &primaries {
            let slot = mbr
                .header
                .get_mut(p.number as usize)
                .expect("primary numbers were checked to be 1-4");
            *slot = mbr_entry(p, ss);
        }
        let Some(ext) = extended else {
            if let Some(l) = logicals.first() {
                return Err(self.bad_part(l, "a logical partition without an extended partition"));
            }
            return Ok(mbr);
        };
        // EBR k sits in the sector after logical k-1 (the first at the
        // extended partition's start); logical k must start after it.
        let (ext_first, ext_end) = (ext.start / ss, (ext.start + ext.size) / ss);
        let mut ebr = ext_first;
        for (k, l) in logicals.iter().enumerate() {
            let expect = 5 + k as u32;
            if l.number != expect {
                return Err(self.bad_part(
                    l,
                    format!(
                        "logical partitions must be numbered 5, 6, … in order; expected {expect}"
                    ),
                ));
            }
            let (first, end) = (l.start / ss, (l.start + l.size) / ss);
            if first <= ebr || end > ext_end {
                return Err(self.bad_part(
                    l,
                    format!(
                        "a logical partition must lie inside the extended partition {} \
                         (sectors {ext_first}..{ext_end}) after its EBR at sector {ebr}",
                        ext.number
                    ),
                ));
            }
            let lba = |v: u64| u32::try_from(v).expect("MBR LBAs were checked to fit 32 bits");
            let ebr_sectors = end - ebr;
            mbr.logical_partitions.push(mbrman::LogicalPartition {
                partition: mbr_entry(l, ss),
                absolute_ebr_lba: lba(ebr),
                ebr_sectors: (k > 0).then(|| lba(ebr_sectors)),
                ebr_first_chs: chs(ebr),
                ebr_last_chs: (k > 0).then(|| chs(end - 1)),
                bootstrap_code: [0; 446],
            });
            ebr = end;
        }
        Ok(mbr)
    }

    /// Writes `mbr` (sector 0 from byte 440 on, and the EBRs). An extended
    /// partition without logical ones gets a zeroed first sector, so no
    /// stale EBR is read as a chain.
    fn write_mbr(&self, mut mbr: mbrman::MBR) -> Result<(), TableError> {
        let ss = self.ss();
        let empty_ext = mbr.logical_partitions.is_empty();
        let mut rec = Recorder::default();
        mbr.write_into(&mut rec)
            .map_err(|e| self.krate("MBR", 0, e))?;
        if empty_ext {
            if let Some((_, e)) = mbr.header.iter().find(|(_, e)| e.is_extended()) {
                let off = u64::from(e.starting_lba) * ss;
                self.pwrite(
                    "clearing the extended partition's first sector of",
                    off,
                    &vec![0; ss as usize],
                )?;
            }
        }
        for (off, bytes) in rec.writes {
            let skip = MBR_BOOT_CODE_END
                .saturating_sub(off)
                .min(bytes.len() as u64);
            let off = off + skip;
            let bytes = &bytes[skip as usize..];
            if !bytes.is_empty() {
                self.pwrite("writing the MBR or an EBR of", off, bytes)?;
            }
        }
        Ok(())
    }

    /// Zeroes GPT headers (signature "EFI PART") at LBA 1 and the last LBA,
    /// for 512- and 4096-byte sectors, and their entry arrays where no new
    /// partition lies.
    fn wipe_stale_gpt(&self) -> Result<(), TableError> {
        let size = self.spec.disk_size;
        for ss in [512u64, 4096] {
            let sectors = size / ss;
            if sectors < 3 {
                continue;
            }
            for lba in [1, sectors - 1] {
                let off = lba * ss;
                let mut h = vec![0u8; ss as usize];
                self.disk
                    .read_exact_at(&mut h, off)
                    .map_err(|e| self.io("reading", off, e))?;
                if &h[..8] != b"EFI PART" {
                    continue;
                }
                tracing::info!(disk = %self.name, offset = off, "zeroing a stale GPT header");
                let entries_lba = u64::from_le_bytes(h[72..80].try_into().expect("8 bytes"));
                let count = u64::from(u32::from_le_bytes(h[80..84].try_into().expect("4 bytes")));
                let esize = u64::from(u32::from_le_bytes(h[84..88].try_into().expect("4 bytes")));
                self.pwrite("zeroing a stale GPT header of", off, &vec![0; ss as usize])?;
                let start = entries_lba.saturating_mul(ss);
                let len = count.saturating_mul(esize).min(1 << 20);
                let end = start.saturating_add(len);
                let clear = start >= MBR_BOOT_CODE_END.max(ss)
                    && end <= size
                    && self
                        .spec
                        .partitions
                        .iter()
                        .all(|p| end <= p.start || start >= p.start + p.size);
                if clear && len > 0 {
                    self.pwrite(
                        "zeroing stale GPT entries of",
                        start,
                        &vec![0; len as usize],
                    )?;
                }
            }
        }
        Ok(())
    }
}

/// The extended-partition type codes (as the survey reads them).
fn is_extended(code: u8) -> bool {
    matches!(code, 0x05 | 0x0f | 0x85 | 0xc5 | 0xd5)
}

/// The MBR entry for `p` (absolute LBAs, already range-checked).
fn mbr_entry(p: &PartSpec, ss: u64) -> mbrman::MBRPartitionEntry {
    let EntrySpec::Mbr {
        type_code,
        bootable,
        ..
    } = p.entry
    else {
        unreachable!("only called for MBR entries");
    };
    let (first, end) = (p.start / ss, (p.start + p.size) / ss);
    mbrman::MBRPartitionEntry {
        boot: if bootable {
            mbrman::BOOT_ACTIVE
        } else {
            mbrman::BOOT_INACTIVE
        },
        first_chs: chs(first),
        sys: type_code,
        last_chs: chs(end - 1),
        starting_lba: u32::try_from(first).expect("MBR LBAs were checked to fit 32 bits"),
        sectors: u32::try_from(end - first).expect("MBR lengths were checked to fit 32 bits"),
    }
}

/// The CHS address of `lba` with 255 heads and 63 sectors per track, or
/// 1023/254/63 beyond cylinder 1023 (as fdisk writes).
fn chs(lba: u64) -> mbrman::CHS {
    let cylinder = lba / (CHS_HEADS * CHS_SECTORS);
    if cylinder > 1023 {
        return mbrman::CHS::new(1023, 254, 63);
    }
    let rem = lba % (CHS_HEADS * CHS_SECTORS);
    mbrman::CHS::new(
        cylinder as u16,
        (rem / CHS_SECTORS) as u8,
        (rem % CHS_SECTORS + 1) as u8,
    )
}

/// Collects what `mbrman` writes as `(offset, bytes)` runs, so they can be
/// applied with `pwrite` and the boot code left alone.
#[derive(Default)]
struct Recorder {
    pos: u64,
    writes: Vec<(u64, Vec<u8>)>,
}

impl Write for Recorder {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.writes.last_mut() {
            Some((off, run)) if *off + run.len() as u64 == self.pos => run.extend_from_slice(buf),
            _ => self.writes.push((self.pos, buf.to_vec())),
        }
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for Recorder {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.pos = match to {
            SeekFrom::Start(n) => n,
            SeekFrom::Current(d) => self
                .pos
                .checked_add_signed(d)
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before byte 0"))?,
            SeekFrom::End(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "the MBR recorder has no end",
                ))
            }
        };
        Ok(self.pos)
    }
}
