//! Partition tables: GPT (through the `gpt` crate) and MBR with its
//! extended chain (through `mbrman`).
//!
//! Both crates trust what they read in places (`gpt` asserts 128-byte
//! entries and allocates the entry array from the header's counts; `mbrman`
//! adds 32-bit LBAs without overflow checks), so every header and the whole
//! EBR chain are validated here first, and the crates only see tables that
//! passed. A GPT whose primary header or entries are damaged is read from
//! the backup (the primary is masked from the crate's view). Detection
//! follows the kernel and blkid:
//!
//! 1. A valid GPT header at LBA 1, or a valid backup at the last LBA, is a
//!    GPT (image files are tried with 512- and then 4096-byte sectors).
//! 2. A protective MBR (type 0xee) without a valid GPT header is an error.
//! 3. Sector 0 without the 0x55aa signature, or holding a FAT or NTFS boot
//!    sector, or with boot indicators other than 0x00/0x80, is no table.
//! 4. Otherwise it is an MBR.

use crate::error::Result;

use super::checksum::crc32;
use super::fat;
use super::fields::{le32, le64};
use super::region::Region;
use super::{BootArea, BootCode, Partition, PartitionKind, PartitionTable, Role};

/// The most GPT entries accepted (4 MiB of entries; tables have 128).
pub const MAX_GPT_ENTRIES: u32 = 32768;
/// The most logical partitions followed in an MBR's extended chain.
pub const MAX_LOGICAL: usize = 256;
/// How much of the boot gap is scanned for non-zero bytes.
pub const GAP_SCAN_LIMIT: u64 = 16 << 20;

/// The GPT entry size the `gpt` crate supports (it asserts it).
const GPT_ENTRY_SIZE: u32 = 128;
/// The GPT header size whose CRC the `gpt` crate computes.
const GPT_HEADER_SIZE: u32 = 92;

/// What [`read`] found.
pub(crate) struct Found {
    pub(crate) table: PartitionTable,
    /// Partitions without their file systems.
    pub(crate) partitions: Vec<Partition>,
    pub(crate) boot: BootArea,
}

/// Reads the partition table of `disk`. `sector` is the logical sector
/// size; `probe_both` says it is only a guess (an image file, or no sysfs
/// entry), so GPT is tried with 512 and 4096.
pub(crate) fn read(disk: &Region, sector: u32, probe_both: bool) -> Result<Found> {
    let none = Found {
        table: PartitionTable::None,
        partitions: Vec::new(),
        boot: BootArea::default(),
    };
    let mut s0 = [0u8; 512];
    if !disk.probe(0, &mut s0)? {
        return Ok(none);
    }
    let signed = s0[510..512] == [0x55, 0xaa];
    let entries: Vec<RawEntry> = (0..4)
        .map(|i| RawEntry::parse(&s0[446 + 16 * i..]))
        .collect();
    // Like the kernel, GPT is only looked for behind a protective (or
    // hybrid) MBR, so a stale backup header at the end of a disk that was
    // relabelled as MBR does not win.
    if signed && entries.iter().any(|e| e.sys == 0xee) {
        let sizes: &[u32] = if probe_both { &[512, 4096] } else { &[sector] };
        for &ss in sizes {
            if let Some(found) = gpt(disk, ss, &s0)? {
                return Ok(found);
            }
        }
        return Err(disk.corrupt(
            "the MBR is a GPT protective MBR (type 0xee) but neither GPT header \
             (LBA 1 or the last LBA) carries the \"EFI PART\" signature",
        ));
    }
    if !signed
        || fat::looks_like_boot_sector(&s0)
        || &s0[3..11] == b"NTFS    "
        || entries.iter().any(|e| e.boot != 0 && e.boot != 0x80)
    {
        return Ok(none);
    }
    mbr(disk, sector, &s0, &entries)
}

/// A 16-byte MBR/EBR entry.
#[derive(Clone, Copy)]
struct RawEntry {
    boot: u8,
    sys: u8,
    start: u64,
    sectors: u64,
}

impl RawEntry {
    fn parse(b: &[u8]) -> Self {
        RawEntry {
            boot: b[0],
            sys: b[4],
            start: u64::from(le32(b, 8)),
            sectors: u64::from(le32(b, 12)),
        }
    }

    fn used(&self) -> bool {
        self.sys != 0 && self.sectors != 0
    }
}

/// Extended partition types: DOS, Win95 LBA, Linux, DR-DOS (the set
/// `mbrman` follows).
fn is_extended(sys: u8) -> bool {
    matches!(sys, 0x05 | 0x0f | 0x85 | 0xc5 | 0xd5)
}

fn mbr_role(sys: u8) -> Role {
    match sys {
        0xef => Role::Esp,
        0x83 => Role::Linux,
        0x82 => Role::Swap,
        0x8e => Role::Lvm,
        0xfd => Role::Raid,
        s if is_extended(s) => Role::Extended,
        _ => Role::Other,
    }
}

/// GPT partition type GUIDs and their roles (uppercase, as specified).
const GPT_ROLES: &[(&str, Role)] = &[
    ("C12A7328-F81F-11D2-BA4B-00A0C93EC93B", Role::Esp),
    ("21686148-6449-6E6F-744E-656564454649", Role::BiosBoot),
    ("0FC63DAF-8483-4772-8E79-3D69D8477DE4", Role::Linux), // Linux file system data
    ("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709", Role::Linux), // root x86-64
    ("44479540-F297-41B2-9AF7-D131D5F0458A", Role::Linux), // root x86
    ("B921B045-1DF0-41C3-AF44-4C6F280D3FAE", Role::Linux), // root arm64
    ("8484680C-9521-48C6-9C11-B0720656F69E", Role::Linux), // /usr x86-64
    ("B0E01050-EE5F-4390-949A-9101B17104E9", Role::Linux), // /usr arm64
    ("933AC7E1-2EB4-4F13-B844-0E14E2AEF915", Role::Linux), // /home
    ("3B8F8425-20E0-4F3B-907F-1A25A76F98E8", Role::Linux), // /srv
    ("4D21B016-B534-45C2-A9FB-5C16E091FD2D", Role::Linux), // /var
    ("7EC6F557-3BC5-4ACA-B293-16EF5DF639D1", Role::Linux), // /var/tmp
    ("BC13C2FF-59E6-4262-A352-B275FD6F7172", Role::Linux), // XBOOTLDR (/boot)
    ("8DA63339-0007-60C0-C436-083AC8230908", Role::Linux), // Linux reserved
    ("0657FD6D-A4AB-43C4-84E5-0933C84B4F4F", Role::Swap),
    ("E6D6D379-F507-44C2-A23C-238F2A3DF928", Role::Lvm),
    ("A19D880F-05FC-4D3B-A006-743F0F84911E", Role::Raid),
];

/// The role of a GPT type GUID (any case).
pub fn gpt_role(type_guid: &str) -> Role {
    GPT_ROLES
        .iter()
        .find(|(g, _)| g.eq_ignore_ascii_case(type_guid))
        .map(|&(_, r)| r)
        .unwrap_or(Role::Other)
}

/// A GPT header that passed validation.
struct GptHeader {
    backup_lba: u64,
    entries_lba: u64,
    entry_count: u32,
    first_usable: u64,
    last_usable: u64,
}

impl GptHeader {
    /// Sectors the entry array takes.
    fn entry_sectors(&self, ss: u64) -> u64 {
        (u64::from(self.entry_count) * u64::from(GPT_ENTRY_SIZE)).div_ceil(ss)
    }
}

/// The header at `lba`: `None` without the signature, `Some(Err(why))` when
/// it has the signature but fails validation.
fn gpt_header(
    disk: &Region,
    lba: u64,
    ss: u64,
) -> Result<Option<std::result::Result<GptHeader, String>>> {
    let mut h = vec![0u8; ss as usize];
    let Some(off) = lba.checked_mul(ss) else {
        return Ok(None);
    };
    if !disk.probe(off, &mut h)? || &h[..8] != b"EFI PART" {
        return Ok(None);
    }
    let at = disk.abs(off);
    let size = le32(&h, 12);
    if size != GPT_HEADER_SIZE {
        return Ok(Some(Err(format!(
            "GPT header at byte {at} has size {size}, not {GPT_HEADER_SIZE}"
        ))));
    }
    let stored = le32(&h, 16);
    h[16..20].fill(0);
    if crc32(&h[..GPT_HEADER_SIZE as usize]) != stored {
        return Ok(Some(Err(format!(
            "GPT header at byte {at} fails its CRC32"
        ))));
    }
    let current = le64(&h, 24);
    let hdr = GptHeader {
        backup_lba: le64(&h, 32),
        first_usable: le64(&h, 40),
        last_usable: le64(&h, 48),
        entries_lba: le64(&h, 72),
        entry_count: le32(&h, 80),
    };
    let entry_size = le32(&h, 84);
    let entries_crc = le32(&h, 88);
    let sectors = disk.len() / ss;
    if current != lba {
        return Ok(Some(Err(format!(
            "GPT header at byte {at} says it is at LBA {current}, not {lba}"
        ))));
    }
    if entry_size != GPT_ENTRY_SIZE {
        return Ok(Some(Err(format!(
            "GPT header at byte {at} has {entry_size}-byte entries; only {GPT_ENTRY_SIZE} is supported"
        ))));
    }
    if hdr.entry_count == 0 || hdr.entry_count > MAX_GPT_ENTRIES {
        return Ok(Some(Err(format!(
            "GPT header at byte {at} has {} entries (1 to {MAX_GPT_ENTRIES} accepted)",
            hdr.entry_count
        ))));
    }
    let entries_end = hdr.entries_lba.saturating_add(hdr.entry_sectors(ss));
    if hdr.entries_lba < 2 && lba == 1 || hdr.entries_lba == lba || entries_end > sectors {
        return Ok(Some(Err(format!(
            "GPT header at byte {at} puts its entries at LBA {}..{entries_end}, outside the \
             {sectors}-sector disk or over a header",
            hdr.entries_lba
        ))));
    }
    if hdr.first_usable > hdr.last_usable.saturating_add(1) || hdr.last_usable >= sectors {
        return Ok(Some(Err(format!(
            "GPT header at byte {at} has usable LBAs {}..={} on a {sectors}-sector disk",
            hdr.first_usable, hdr.last_usable
        ))));
    }
    let n = u64::from(hdr.entry_count) * u64::from(GPT_ENTRY_SIZE);
    let entries = disk.read_vec(hdr.entries_lba * ss, n, &|| "the GPT entry array".into())?;
    if crc32(&entries) != entries_crc {
        return Ok(Some(Err(format!(
            "the GPT entry array at byte {} (of the header at byte {at}) fails its CRC32",
            disk.abs(hdr.entries_lba * ss)
        ))));
    }
    Ok(Some(Ok(hdr)))
}

/// Reads a GPT with `ss`-byte sectors; `None` when neither header has the
/// signature.
fn gpt(disk: &Region, ss: u32, s0: &[u8; 512]) -> Result<Option<Found>> {
    let ssu = u64::from(ss);
    let sectors = disk.len() / ssu;
    if sectors < 3 {
        return Ok(None);
    }
    let primary = gpt_header(disk, 1, ssu)?;
    let backup = gpt_header(disk, sectors - 1, ssu)?;
    let (hdr, primary_valid, backup_valid) = match (primary, backup) {
        (None, None) => return Ok(None),
        (Some(Ok(p)), b) => {
            let b_ok = matches!(b, Some(Ok(_)));
            (p, true, b_ok)
        }
        (_, Some(Ok(b))) => (b, false, true),
        (p, b) => {
            let why = |h: Option<std::result::Result<GptHeader, String>>, which: &str| match h {
                None => format!("no {which} header"),
                Some(Err(e)) => e,
                Some(Ok(_)) => String::new(),
            };
            return Err(disk.corrupt(format!(
                "GPT unreadable: {}; {}",
                why(p, "primary"),
                why(b, "backup")
            )));
        }
    };
    if !primary_valid {
        tracing::warn!(
            disk = %disk.label(),
            "the primary GPT header or its entries are damaged; reading the backup"
        );
    }
    // The crate reads the primary header when it is valid; hide it when it
    // is not, so the crate reads the backup this code validated.
    let hide = if primary_valid {
        (0, 0)
    } else {
        (ssu, 2 * ssu)
    };
    let lb = if ss == 4096 {
        gpt::disk::LogicalBlockSize::Lb4096
    } else {
        gpt::disk::LogicalBlockSize::Lb512
    };
    let table = gpt::GptConfig::new()
        .writable(false)
        .logical_block_size(lb)
        .open_from_device(disk.cursor(hide))
        .map_err(|e| disk.corrupt(format!("GPT ({ss}-byte sectors): {e}")))?;

    let mut partitions = Vec::new();
    for (&number, p) in table.partitions() {
        if !p.is_used() {
            continue;
        }
        if p.first_lba > p.last_lba || p.last_lba >= sectors || p.first_lba == 0 {
            return Err(disk.corrupt(format!(
                "GPT partition {number} spans LBA {}..={} on a {sectors}-sector disk \
                 (truncated image?)",
                p.first_lba, p.last_lba
            )));
        }
        let type_guid = p.part_type_guid.guid.to_string();
        partitions.push(Partition {
            number,
            start: p.first_lba * ssu,
            size: (p.last_lba - p.first_lba + 1) * ssu,
            role: gpt_role(&type_guid),
            kind: PartitionKind::Gpt {
                type_guid,
                unique_guid: p.part_guid.to_string(),
                name: p.name.clone(),
                attributes: p.flags,
                first_lba: p.first_lba,
                last_lba: p.last_lba,
            },
            filesystem: None,
        });
    }

    let entry_sectors = hdr.entry_sectors(ssu);
    // Where the primary's pieces are (the standard place when only the
    // backup survived), and the backup's.
    let (p_entries, b_header) = if primary_valid {
        (hdr.entries_lba, hdr.backup_lba.min(sectors - 1))
    } else {
        (2, sectors - 1)
    };
    let b_entries = if backup_valid && !primary_valid {
        hdr.entries_lba
    } else {
        b_header.saturating_sub(entry_sectors)
    };
    let mut table_ranges = vec![
        (0, 2 * ssu),
        (p_entries * ssu, (p_entries + entry_sectors) * ssu),
        (b_entries * ssu, (b_entries + entry_sectors) * ssu),
        (b_header * ssu, (b_header + 1) * ssu),
    ];
    table_ranges = super::ranges::normalize(table_ranges);
    let table_end = (p_entries + entry_sectors).max(2) * ssu;
    let boot = boot_area(disk, s0, table_ranges, table_end, &partitions)?;
    Ok(Some(Found {
        table: PartitionTable::Gpt {
            disk_guid: table.guid().to_string(),
            sector_size: ss,
            first_usable_lba: hdr.first_usable,
            last_usable_lba: hdr.last_usable,
            entry_count: hdr.entry_count,
            primary_valid,
            backup_valid,
        },
        partitions,
        boot,
    }))
}

/// The boot pieces: boot code, the gap between `table_end` and the first
/// partition.
fn boot_area(
    disk: &Region,
    s0: &[u8; 512],
    table_ranges: Vec<(u64, u64)>,
    table_end: u64,
    partitions: &[Partition],
) -> Result<BootArea> {
    let first = partitions
        .iter()
        .filter(|p| !matches!(p.kind, PartitionKind::Mbr { logical: true, .. }))
        .map(|p| p.start)
        .min();
    let gap = first.filter(|&f| f > table_end).map(|f| (table_end, f));
    let mut gap_has_data = false;
    if let Some((a, b)) = gap {
        let end = b.min(a.saturating_add(GAP_SCAN_LIMIT));
        let mut buf = vec![0u8; 64 << 10];
        let mut off = a;
        while off < end && !gap_has_data {
            let n = (end - off).min(buf.len() as u64) as usize;
            disk.read(off, &mut buf[..n], &|| "the boot gap".into())?;
            gap_has_data = buf[..n].iter().any(|&b| b != 0);
            off += n as u64;
        }
    }
    let code = &s0[..440];
    let mbr_boot_code = if code.iter().all(|&b| b == 0) {
        None
    } else if code.windows(4).any(|w| w == b"GRUB") {
        Some(BootCode::Grub)
    } else {
        Some(BootCode::Other)
    };
    Ok(BootArea {
        table_ranges,
        gap,
        gap_has_data,
        mbr_boot_code,
        esp: None,
        bios_boot: None,
    })
}

/// Reads an MBR with `ss`-byte sectors whose primary entries are `entries`.
fn mbr(disk: &Region, ss: u32, s0: &[u8; 512], entries: &[RawEntry]) -> Result<Found> {
    let ssu = u64::from(ss);
    let sectors = disk.len() / ssu;
    for (i, e) in entries.iter().enumerate() {
        // mbrman counts an entry with any type as used, and a used entry at
        // sector 0 makes its alignment search panic.
        if e.sys != 0 && e.start == 0 || e.used() && e.start + e.sectors > sectors {
            return Err(disk.corrupt(format!(
                "MBR partition {} spans sectors {}..{} on a {sectors}-sector disk (truncated image?)",
                i + 1,
                e.start,
                e.start + e.sectors
            )));
        }
    }
    // Validate the extended chain before mbrman walks it.
    let mut ebrs = Vec::new();
    // mbrman follows the first entry with an extended type, used or not.
    if let Some(ext) = entries.iter().find(|e| is_extended(e.sys)) {
        if ext.start == 0 || ext.sectors == 0 {
            return Err(disk.corrupt(format!(
                "the extended partition entry spans sectors {}..{}",
                ext.start,
                ext.start + ext.sectors
            )));
        }
        walk_ebrs(disk, ssu, ext, &mut ebrs)?;
    }
    let mbr = mbrman::MBR::read_from(&mut disk.cursor((0, 0)), ss)
        .map_err(|e| disk.corrupt(format!("MBR: {e}")))?;

    let mut partitions = Vec::new();
    for (i, e) in mbr.header.iter() {
        if e.is_used() && e.sectors > 0 {
            partitions.push(mbr_partition(i as u32, e, false, ssu));
        }
    }
    let mut number = 5;
    for l in &mbr.logical_partitions {
        let e = &l.partition;
        if e.is_used() && e.sectors > 0 {
            partitions.push(mbr_partition(number, e, true, ssu));
            number += 1;
        }
    }
    if number - 5 != ebrs.iter().filter(|(_, used)| *used).count() as u32 {
        return Err(disk.corrupt(format!(
            "mbrman found {} logical partitions where the EBR chain has {}",
            number - 5,
            ebrs.iter().filter(|(_, used)| *used).count()
        )));
    }
    let mut table_ranges = vec![(0, ssu)];
    table_ranges.extend(ebrs.iter().map(|&(lba, _)| (lba * ssu, (lba + 1) * ssu)));
    let table_ranges = super::ranges::normalize(table_ranges);
    let boot = boot_area(disk, s0, table_ranges, ssu, &partitions)?;
    Ok(Found {
        table: PartitionTable::Mbr {
            disk_signature: format!("{:08x}", le32(s0, 440)),
            sector_size: ss,
        },
        partitions,
        boot,
    })
}

fn mbr_partition(number: u32, e: &mbrman::MBRPartitionEntry, logical: bool, ss: u64) -> Partition {
    let first = u64::from(e.starting_lba);
    let sectors = u64::from(e.sectors);
    Partition {
        number,
        start: first * ss,
        size: sectors * ss,
        kind: PartitionKind::Mbr {
            type_code: e.sys,
            bootable: e.boot == mbrman::BOOT_ACTIVE,
            logical,
            first_lba: first,
            sectors,
        },
        role: mbr_role(e.sys),
        filesystem: None,
    }
}

/// Walks the EBR chain of `ext` with the checks `mbrman` lacks, collecting
/// each EBR's absolute LBA and whether it describes a partition.
fn walk_ebrs(disk: &Region, ss: u64, ext: &RawEntry, out: &mut Vec<(u64, bool)>) -> Result<()> {
    let ext_end = ext.start + ext.sectors;
    let mut rel = 0u64;
    for _ in 0..=MAX_LOGICAL {
        let lba = ext.start + rel;
        if lba > u64::from(u32::MAX) {
            return Err(disk.corrupt(format!("EBR at LBA {lba} lies beyond 32-bit LBAs")));
        }
        let mut s = [0u8; 512];
        disk.read(lba * ss, &mut s, &|| format!("the EBR at LBA {lba}"))?;
        if s[510..512] != [0x55, 0xaa] {
            if rel == 0 {
                // An empty extended partition needs no EBR.
                out.push((lba, false));
                return Ok(());
            }
            return Err(disk.corrupt(format!(
                "EBR at byte {} has no 0x55aa signature",
                disk.abs(lba * ss)
            )));
        }
        let e1 = RawEntry::parse(&s[446..]);
        let e2 = RawEntry::parse(&s[462..]);
        if ![e1.boot, e2.boot].iter().all(|&b| b == 0 || b == 0x80) {
            return Err(disk.corrupt(format!(
                "EBR at byte {} has an invalid boot indicator",
                disk.abs(lba * ss)
            )));
        }
        let first = lba + e1.start;
        // mbrman adds these as u32 whether or not the entry is used.
        if first > u64::from(u32::MAX)
            || e1.sys != 0 && (first + e1.sectors > ext_end || e1.start == 0 && e1.sectors > 0)
        {
            return Err(disk.corrupt(format!(
                "logical partition in the EBR at byte {} spans sectors {first}..{} outside \
                 the extended partition (sectors {}..{ext_end})",
                disk.abs(lba * ss),
                first + e1.sectors,
                ext.start
            )));
        }
        out.push((lba, e1.sys != 0 && e1.sectors != 0));
        if e2.start == 0 {
            return Ok(());
        }
        if e2.start <= rel || e2.start >= ext.sectors {
            return Err(disk.corrupt(format!(
                "EBR at byte {} links to sector {} of the extended partition, which is not \
                 after it and inside the {}-sector extended partition",
                disk.abs(lba * ss),
                e2.start,
                ext.sectors
            )));
        }
        rel = e2.start;
    }
    Err(disk.corrupt(format!(
        "the extended partition's EBR chain is longer than {MAX_LOGICAL} entries"
    )))
}
