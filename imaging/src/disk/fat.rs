//! The FAT boot sector (BIOS parameter block): detection, FAT12/16/32
//! geometry, serial and label, and a bounded walk over the active FAT.
//!
//! The FAT width follows the kernel and dosfstools: FAT32 when the 16-bit
//! FAT size is 0 (the FAT32 BPB layout), else FAT12 below 4085 clusters and
//! FAT16 from there. The label is the root directory's volume-label entry
//! when there is one, else the boot sector's (blkid's rule; `NO NAME` is no
//! label).

use crate::error::Result;

use super::fields::{label, le16, le32};
use super::fs::{Filesystem, FsType};
use super::ranges::push;
use super::region::Region;

/// Fewer clusters than this is FAT12 (when not FAT32).
const FAT12_MAX: u64 = 4085;
/// Bytes of FAT read at a time when walking it.
const FAT_CHUNK: u64 = 1 << 20;
/// The most root-directory clusters searched for the label (FAT32).
const ROOT_DIR_MAX_CLUSTERS: u64 = 4096;

/// The geometry of a FAT file system, validated.
#[derive(Clone, Debug)]
pub(crate) struct Bpb {
    /// Bytes per sector.
    pub(crate) sector: u64,
    pub(crate) sectors_per_cluster: u64,
    pub(crate) reserved: u64,
    pub(crate) fats: u64,
    pub(crate) root_entries: u64,
    pub(crate) total_sectors: u64,
    /// Sectors per FAT.
    pub(crate) fat_sectors: u64,
    /// 12, 16 or 32.
    pub(crate) bits: u32,
    pub(crate) root_cluster: u64,
    pub(crate) fsinfo_sector: u64,
    pub(crate) ext_flags: u16,
    /// Data clusters (numbered 2 to `clusters + 1`).
    pub(crate) clusters: u64,
    /// First sector of the data area.
    pub(crate) data_start: u64,
    pub(crate) serial: Option<u32>,
    pub(crate) label: Option<String>,
}

impl Bpb {
    /// Cluster size in bytes.
    pub(crate) fn cluster_size(&self) -> u64 {
        self.sector * self.sectors_per_cluster
    }

    /// Byte offset of cluster `c` (≥ 2).
    pub(crate) fn cluster_offset(&self, c: u64) -> u64 {
        self.data_start * self.sector + (c - 2) * self.cluster_size()
    }

    /// Byte offset of the FAT the file system uses (FAT32 may mirror all
    /// FATs or name one active FAT in `ext_flags`).
    pub(crate) fn active_fat_offset(&self) -> u64 {
        let idx = if self.bits == 32 && self.ext_flags & 0x80 != 0 {
            u64::from(self.ext_flags & 0xf).min(self.fats - 1)
        } else {
            0
        };
        (self.reserved + idx * self.fat_sectors) * self.sector
    }

    /// The entry value that marks a bad cluster.
    fn bad(&self) -> u32 {
        match self.bits {
            12 => 0xff7,
            16 => 0xfff7,
            _ => 0x0fff_fff7,
        }
    }
}

fn has_fat_magic(s: &[u8]) -> bool {
    &s[0x52..0x57] == b"MSWIN"
        || &s[0x52..0x5a] == b"FAT32   "
        || &s[0x36..0x3b] == b"MSDOS"
        || [b"FAT16   ", b"FAT12   ", b"FAT     "].contains(&&bytes8(s, 0x36))
}

fn bytes8(s: &[u8], at: usize) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(&s[at..at + 8]);
    a
}

/// True when sector 0 is a FAT boot sector (then it is not an MBR, even if
/// it carries 0x55aa and a partition entry, as `mkfs.fat --mbr` writes).
pub(crate) fn looks_like_boot_sector(s: &[u8; 512]) -> bool {
    matches!(parse(s), Some(Ok(_)))
}

/// Parses a boot sector: `None` when it does not look like FAT at all,
/// `Some(Err(why))` when it does but the geometry is impossible.
pub(crate) fn parse(s: &[u8]) -> Option<std::result::Result<Bpb, String>> {
    let jump = s[0] == 0xe9 || s[0] == 0xeb && s[2] == 0x90;
    if !(has_fat_magic(s) || jump && s[510..512] == [0x55, 0xaa]) {
        return None;
    }
    let sector = u64::from(le16(s, 11));
    let spc = u64::from(s[13]);
    let reserved = u64::from(le16(s, 14));
    let fats = u64::from(s[16]);
    let media = s[21];
    // The cheap checks decide "not FAT" (an MBR's boot code may start with
    // a jump); what follows decides "damaged FAT".
    if !sector.is_power_of_two()
        || !(512..=4096).contains(&sector)
        || !spc.is_power_of_two()
        || reserved == 0
        || fats == 0
        || !(media == 0xf0 || media >= 0xf8)
    {
        return None;
    }
    Some(geometry(s, sector, spc, reserved, fats))
}

fn geometry(
    s: &[u8],
    sector: u64,
    spc: u64,
    reserved: u64,
    fats: u64,
) -> std::result::Result<Bpb, String> {
    let root_entries = u64::from(le16(s, 17));
    let total16 = u64::from(le16(s, 19));
    let fat16_size = u64::from(le16(s, 22));
    let total_sectors = if total16 != 0 {
        total16
    } else {
        u64::from(le32(s, 32))
    };
    let fat32 = fat16_size == 0;
    let fat_sectors = if fat32 {
        u64::from(le32(s, 36))
    } else {
        fat16_size
    };
    if fats > 4 || total_sectors == 0 || fat_sectors == 0 {
        return Err(format!(
            "{fats} FATs of {fat_sectors} sectors, {total_sectors} sectors in all"
        ));
    }
    if fat32 && root_entries != 0 {
        return Err(format!(
            "FAT32 layout with {root_entries} root directory entries"
        ));
    }
    let root_dir_sectors = (root_entries * 32).div_ceil(sector);
    let data_start = reserved + fats * fat_sectors + root_dir_sectors;
    if data_start >= total_sectors {
        return Err(format!(
            "the data area starts at sector {data_start} of {total_sectors}"
        ));
    }
    let clusters = (total_sectors - data_start) / spc;
    let bits = if fat32 {
        32
    } else if clusters < FAT12_MAX {
        12
    } else {
        16
    };
    let capacity = fat_sectors * sector * 8 / u64::from(bits);
    if clusters == 0 || clusters + 2 > capacity || bits == 32 && clusters > 0x0fff_fff5 {
        return Err(format!(
            "{clusters} clusters but each {fat_sectors}-sector FAT{bits} holds {capacity} entries"
        ));
    }
    let ebpb = if fat32 { 0x40 } else { 0x24 };
    let sig = s[ebpb + 2];
    let (serial, bs_label) = if sig == 0x29 || sig == 0x28 {
        let serial = Some(le32(s, ebpb + 3));
        let l = if sig == 0x29 {
            label(&s[ebpb + 7..ebpb + 18]).filter(|l| l != "NO NAME")
        } else {
            None
        };
        (serial, l)
    } else {
        (None, None)
    };
    let root_cluster = if fat32 { u64::from(le32(s, 44)) } else { 0 };
    if fat32 && (root_cluster < 2 || root_cluster > clusters + 1) {
        return Err(format!("root directory at cluster {root_cluster}"));
    }
    Ok(Bpb {
        sector,
        sectors_per_cluster: spc,
        reserved,
        fats,
        root_entries,
        total_sectors,
        fat_sectors,
        bits,
        root_cluster,
        fsinfo_sector: if fat32 { u64::from(le16(s, 48)) } else { 0 },
        ext_flags: if fat32 { le16(s, 40) } else { 0 },
        clusters,
        data_start,
        serial,
        label: bs_label,
    })
}

/// Reads the boot sector of `part` and checks that the file system fits.
pub(crate) fn read_bpb(part: &Region) -> Result<Option<std::result::Result<Bpb, String>>> {
    let mut s = [0u8; 512];
    if !part.probe(0, &mut s)? {
        return Ok(None);
    }
    Ok(parse(&s).map(|r| {
        r.and_then(|b| match b.total_sectors.checked_mul(b.sector) {
            Some(size) if size <= part.len() => Ok(b),
            _ => Err(format!(
                "{} sectors of {} bytes do not fit the {}-byte partition (truncated image?)",
                b.total_sectors,
                b.sector,
                part.len()
            )),
        })
    }))
}

/// Calls `f(first, count)` for each run of allocated clusters (not free,
/// not bad), in ascending order, reading the active FAT in chunks. Returns
/// the number of allocated clusters.
pub(crate) fn walk_fat(part: &Region, bpb: &Bpb, mut f: impl FnMut(u64, u64)) -> Result<u64> {
    let entries = bpb.clusters + 2;
    let fat = bpb.active_fat_offset();
    let bad = bpb.bad();
    let mut run: Option<(u64, u64)> = None;
    let mut total = 0u64;
    let mut visit = |c: u64, v: u32| {
        if c < 2 {
            return;
        }
        if v != 0 && v != bad {
            total += 1;
            run = match run {
                Some((s, n)) if s + n == c => Some((s, n + 1)),
                Some((s, n)) => {
                    f(s, n);
                    Some((c, 1))
                }
                None => Some((c, 1)),
            };
        }
    };
    if bpb.bits == 12 {
        let n = (entries * 3).div_ceil(2);
        let buf = part.read_vec(fat, n + 1, &|| "the FAT12".into())?;
        for c in 0..entries {
            let off = (c + c / 2) as usize;
            let v = u32::from(le16(&buf, off));
            visit(c, if c % 2 == 1 { v >> 4 } else { v & 0xfff });
        }
    } else {
        let width = u64::from(bpb.bits / 8);
        let per_chunk = FAT_CHUNK / width;
        let mut c = 0;
        while c < entries {
            let n = per_chunk.min(entries - c);
            let buf = part.read_vec(fat + c * width, n * width, &|| {
                format!("the FAT{} entries from cluster {c}", bpb.bits)
            })?;
            for (i, e) in buf.chunks_exact(width as usize).enumerate() {
                let v = if width == 2 {
                    u32::from(le16(e, 0))
                } else {
                    le32(e, 0) & 0x0fff_ffff
                };
                visit(c + i as u64, v);
            }
            c += n;
        }
    }
    if let Some((s, n)) = run {
        f(s, n);
    }
    Ok(total)
}

/// The next cluster after `c` in the FAT, or `None` at the end of a chain.
fn next_cluster(part: &Region, bpb: &Bpb, c: u64) -> Result<Option<u64>> {
    let fat = bpb.active_fat_offset();
    let v = match bpb.bits {
        12 => {
            let mut b = [0u8; 2];
            part.read(fat + c + c / 2, &mut b, &|| "a FAT12 entry".into())?;
            let v = u64::from(u16::from_le_bytes(b));
            if c % 2 == 1 {
                v >> 4
            } else {
                v & 0xfff
            }
        }
        16 => {
            let mut b = [0u8; 2];
            part.read(fat + 2 * c, &mut b, &|| "a FAT16 entry".into())?;
            u64::from(u16::from_le_bytes(b))
        }
        _ => {
            let mut b = [0u8; 4];
            part.read(fat + 4 * c, &mut b, &|| "a FAT32 entry".into())?;
            u64::from(u32::from_le_bytes(b) & 0x0fff_ffff)
        }
    };
    Ok((2..=bpb.clusters + 1).contains(&v).then_some(v))
}

/// The volume-label entry of the root directory, if any.
fn root_dir_label(part: &Region, bpb: &Bpb) -> Result<Option<String>> {
    let scan = |dir: &[u8]| -> (Option<String>, bool) {
        for e in dir.chunks_exact(32) {
            match e[0] {
                0 => return (None, true),
                0xe5 => continue,
                _ => {}
            }
            let attr = e[11];
            if attr & 0x08 != 0 && attr & 0x0f != 0x0f {
                let mut name = [0u8; 11];
                name.copy_from_slice(&e[..11]);
                if name[0] == 0x05 {
                    name[0] = 0xe5;
                }
                return (label(&name).filter(|l| l != "NO NAME"), true);
            }
        }
        (None, false)
    };
    if bpb.bits != 32 {
        let off = (bpb.reserved + bpb.fats * bpb.fat_sectors) * bpb.sector;
        let dir = part.read_vec(off, bpb.root_entries * 32, &|| "the root directory".into())?;
        return Ok(scan(&dir).0);
    }
    let mut c = bpb.root_cluster;
    let mut buf = vec![0u8; bpb.cluster_size() as usize];
    for _ in 0..ROOT_DIR_MAX_CLUSTERS.min(bpb.clusters) {
        part.read(bpb.cluster_offset(c), &mut buf, &|| {
            format!("root directory cluster {c}")
        })?;
        let (l, done) = scan(&buf);
        if done {
            return Ok(l);
        }
        match next_cluster(part, bpb, c)? {
            Some(n) => c = n,
            None => break,
        }
    }
    Ok(None)
}

/// The vfat detector.
pub(crate) fn detect(part: &Region) -> Result<Option<Filesystem>> {
    let Some(parsed) = read_bpb(part)? else {
        return Ok(None);
    };
    let mut fs = Filesystem {
        fs_type: FsType::Vfat,
        version: None,
        uuid: None,
        label: None,
        size: None,
        used: None,
        block_size: None,
        problem: None,
    };
    let bpb = match parsed {
        Ok(b) => b,
        Err(why) => {
            fs.problem = Some(format!("boot sector at byte {}: {why}", part.abs(0)));
            return Ok(Some(fs));
        }
    };
    fs.version = Some(format!("FAT{}", bpb.bits));
    fs.uuid = bpb
        .serial
        .map(|s| format!("{:04X}-{:04X}", s >> 16, s & 0xffff));
    fs.block_size = u32::try_from(bpb.cluster_size()).ok();
    fs.size = Some(bpb.total_sectors * bpb.sector);
    fs.label = match root_dir_label(part, &bpb) {
        Ok(l) => l.or_else(|| bpb.label.clone()),
        Err(e) => {
            fs.problem = Some(format!("root directory: {e}"));
            bpb.label.clone()
        }
    };
    let used_clusters = match fsinfo_free(part, &bpb)? {
        Some(free) => Some(bpb.clusters - free),
        None => match walk_fat(part, &bpb, |_, _| {}) {
            Ok(n) => Some(n),
            Err(e) => {
                fs.problem = Some(format!("FAT: {e}"));
                None
            }
        },
    };
    fs.used = used_clusters.map(|n| n * bpb.cluster_size());
    Ok(Some(fs))
}

/// FAT32's FSInfo free-cluster count, when present and plausible.
fn fsinfo_free(part: &Region, bpb: &Bpb) -> Result<Option<u64>> {
    if bpb.bits != 32 || bpb.fsinfo_sector == 0 || bpb.fsinfo_sector >= bpb.reserved {
        return Ok(None);
    }
    let mut s = [0u8; 512];
    if !part.probe(bpb.fsinfo_sector * bpb.sector, &mut s)? {
        return Ok(None);
    }
    if le32(&s, 0) != 0x4161_5252 || le32(&s, 484) != 0x6141_7272 {
        return Ok(None);
    }
    let free = u64::from(le32(&s, 488));
    Ok((free <= bpb.clusters).then_some(free))
}

/// Appends the byte ranges of clusters `[first, first + n)` to `out`.
pub(crate) fn push_clusters(out: &mut Vec<(u64, u64)>, bpb: &Bpb, first: u64, n: u64) {
    let s = bpb.cluster_offset(first);
    push(out, s, s + n * bpb.cluster_size());
}
