//! File-system (and volume) detection from superblocks.
//!
//! Each detector reads the few bytes blkid's probe for the same type reads:
//!
//! | type | where | what |
//! |---|---|---|
//! | LUKS 1/2 | byte 0 | magic `LUKS\xba\xbe`, version, UUID (168), LUKS2 label (24) |
//! | LVM2 PV | sectors 0-3 | `LABELONE` + `LVM2 001`, PV UUID and device size from the PV header |
//! | xfs | byte 0 | `XFSB`, block size, `dblocks`, `fdblocks`, UUID, 12-byte label |
//! | btrfs | 64 KiB | `_BHRfS_M` at +0x40, fsid, label, `total_bytes`, `bytes_used` |
//! | ext2/3/4 | 1024 | magic 0xef53, features, counts, UUID, label (see `ext`) |
//! | swap | page end | `SWAPSPACE2`/`SWAP-SPACE` at page size − 10 (4-64 KiB pages), header at 1024: `last_page`, UUID, label |
//! | ntfs | byte 0 | `NTFS    ` at 3, geometry, serial; label from MFT record 3 (`$Volume`) |
//! | vfat | byte 0 | BPB (see `fat`), serial, label from the root directory or the boot sector |
//!
//! The first match in that order wins (strong magics first, vfat's weak one
//! last). A superblock whose magic matches but whose fields do not add up
//! is still reported, with [`Filesystem::problem`] saying why.

use serde::{Deserialize, Serialize};

use crate::error::Result;

use super::fields::{be16, be32, be64, cstr, label, le16, le32, le64, uuid};
use super::region::Region;
use super::{ext, fat};

/// A file system or volume format found at the start of a partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filesystem {
    /// The format.
    #[serde(rename = "type")]
    pub fs_type: FsType,
    /// The format's version where it has one: `FAT12`/`FAT16`/`FAT32`,
    /// LUKS `1`/`2`, swap `1` (or `0`, `suspend`), LVM `LVM2 001`, xfs
    /// `4`/`5`, ext `1.0` (revision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The UUID in blkid's form (`xxxx-xxxx` for vfat, 16 hex digits for
    /// ntfs, the 32-character PV UUID with dashes for LVM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// The label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Bytes the file system spans, per its superblock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Bytes in use, per its superblock: ext (blocks − free blocks) × block
    /// size; xfs (`dblocks` − `fdblocks`) × block size; vfat allocated
    /// clusters × cluster size (FSInfo's free count on FAT32 when valid,
    /// else the FAT); btrfs `bytes_used`. `None` for swap, LVM, LUKS, ntfs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used: Option<u64>,
    /// The allocation unit (block or cluster size) in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u32>,
    /// Set when the magic matched but the superblock does not add up (the
    /// other fields are then what could be read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl Filesystem {
    /// True when ferry fully handles this file system in a capture: its
    /// type is one of [`FsType::supported_for_capture`] and the superblock
    /// had no [`problem`](Self::problem). Everything else is detected and
    /// reported; refusing (or capturing it as raw bytes) is the caller's
    /// decision.
    pub fn supported_for_capture(&self) -> bool {
        self.fs_type.supported_for_capture() && self.problem.is_none()
    }

    fn new(fs_type: FsType) -> Self {
        Filesystem {
            fs_type,
            version: None,
            uuid: None,
            label: None,
            size: None,
            used: None,
            block_size: None,
            problem: None,
        }
    }
}

/// The formats the survey recognises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FsType {
    /// ext2 (no journal, no ext4 features).
    Ext2,
    /// ext3 (a journal, no ext4 features).
    Ext3,
    /// ext4 (any feature beyond ext3's: extents, 64bit, flex_bg, …).
    Ext4,
    /// XFS.
    Xfs,
    /// FAT12, FAT16 or FAT32 (see [`Filesystem::version`]).
    Vfat,
    /// Linux swap.
    Swap,
    /// An LVM2 physical volume.
    Lvm2Pv,
    /// A LUKS 1 or 2 encrypted volume.
    Luks,
    /// Btrfs.
    Btrfs,
    /// NTFS.
    Ntfs,
}

impl FsType {
    /// The types ferry fully handles in a capture: ext2/3/4 and vfat (only
    /// used blocks are stored), xfs (stored whole until its free-space trees
    /// are read), swap (only its UUID and label matter; the header page is
    /// stored). LVM, LUKS, btrfs and ntfs are not: LVM and LUKS hide the
    /// file systems inside them, ferry's btrfs and ntfs support would be
    /// raw copies without any check.
    pub fn supported_for_capture(self) -> bool {
        matches!(
            self,
            FsType::Ext2 | FsType::Ext3 | FsType::Ext4 | FsType::Xfs | FsType::Vfat | FsType::Swap
        )
    }

    /// The name blkid gives it (`TYPE=`).
    pub fn blkid_name(self) -> &'static str {
        match self {
            FsType::Ext2 => "ext2",
            FsType::Ext3 => "ext3",
            FsType::Ext4 => "ext4",
            FsType::Xfs => "xfs",
            FsType::Vfat => "vfat",
            FsType::Swap => "swap",
            FsType::Lvm2Pv => "LVM2_member",
            FsType::Luks => "crypto_LUKS",
            FsType::Btrfs => "btrfs",
            FsType::Ntfs => "ntfs",
        }
    }
}

/// Identifies the file system at the start of `part`; `None` when nothing
/// is recognised. Errors only when the disk cannot be read.
pub(crate) fn detect(part: &Region) -> Result<Option<Filesystem>> {
    type Detector = fn(&Region) -> Result<Option<Filesystem>>;
    const DETECTORS: [Detector; 8] = [luks, lvm, xfs, btrfs, ext::detect, swap, ntfs, fat::detect];
    for d in DETECTORS {
        if let Some(fs) = d(part)? {
            return Ok(Some(fs));
        }
    }
    Ok(None)
}

fn luks(part: &Region) -> Result<Option<Filesystem>> {
    let mut h = [0u8; 512];
    if !part.probe(0, &mut h)? || &h[..6] != b"LUKS\xba\xbe" {
        return Ok(None);
    }
    let version = be16(&h, 6);
    let mut fs = Filesystem::new(FsType::Luks);
    fs.version = Some(version.to_string());
    fs.uuid = cstr(&h[168..208]);
    match version {
        1 => {}
        2 => fs.label = cstr(&h[24..72]),
        v => fs.problem = Some(format!("unknown LUKS version {v}")),
    }
    Ok(Some(fs))
}

fn lvm(part: &Region) -> Result<Option<Filesystem>> {
    let mut s = [0u8; 4 * 512];
    if !part.probe(0, &mut s)? {
        return Ok(None);
    }
    for sector in 0..4 {
        let l = &s[sector * 512..(sector + 1) * 512];
        if &l[..8] != b"LABELONE" || &l[24..32] != b"LVM2 001" {
            continue;
        }
        let mut fs = Filesystem::new(FsType::Lvm2Pv);
        fs.version = Some("LVM2 001".into());
        let at = le32(l, 20) as usize;
        if at + 40 > 512 {
            fs.problem = Some(format!(
                "the LVM label in sector {sector} puts its PV header at offset {at}"
            ));
            return Ok(Some(fs));
        }
        let id = &l[at..at + 32];
        if id.iter().all(|c| c.is_ascii_alphanumeric()) {
            let id = String::from_utf8_lossy(id);
            // blkid's form: 6-4-4-4-4-4-6.
            let cuts = [6, 4, 4, 4, 4, 4, 6];
            let mut parts = Vec::new();
            let mut i = 0;
            for c in cuts {
                parts.push(&id[i..i + c]);
                i += c;
            }
            fs.uuid = Some(parts.join("-"));
        }
        fs.size = Some(le64(l, at + 32));
        return Ok(Some(fs));
    }
    Ok(None)
}

fn xfs(part: &Region) -> Result<Option<Filesystem>> {
    let mut sb = [0u8; 512];
    if !part.probe(0, &mut sb)? || &sb[..4] != b"XFSB" {
        return Ok(None);
    }
    let mut fs = Filesystem::new(FsType::Xfs);
    let bs = be32(&sb, 4);
    let dblocks = be64(&sb, 8);
    let fdblocks = be64(&sb, 144);
    fs.version = Some((be16(&sb, 100) & 0xf).to_string());
    fs.uuid = uuid(&sb[32..48]);
    fs.label = label(&sb[108..120]);
    if !bs.is_power_of_two() || !(512..=65536).contains(&bs) {
        fs.problem = Some(format!("xfs block size {bs}"));
        return Ok(Some(fs));
    }
    fs.block_size = Some(bs);
    match dblocks.checked_mul(u64::from(bs)) {
        Some(size) if size <= part.len() && fdblocks <= dblocks => {
            fs.size = Some(size);
            fs.used = Some((dblocks - fdblocks) * u64::from(bs));
        }
        _ => {
            fs.problem = Some(format!(
                "xfs superblock says {dblocks} blocks of {bs} bytes ({fdblocks} free) in a \
                 {}-byte partition",
                part.len()
            ))
        }
    }
    Ok(Some(fs))
}

fn btrfs(part: &Region) -> Result<Option<Filesystem>> {
    let mut sb = [0u8; 4096];
    if !part.probe(0x10000, &mut sb)? || &sb[0x40..0x48] != b"_BHRfS_M" {
        return Ok(None);
    }
    let mut fs = Filesystem::new(FsType::Btrfs);
    fs.uuid = uuid(&sb[0x20..0x30]);
    fs.label = label(&sb[0x12b..0x22b]);
    let sectorsize = le32(&sb, 0x90);
    if sectorsize.is_power_of_two() && (512..=65536).contains(&sectorsize) {
        fs.block_size = Some(sectorsize);
    }
    let total = le64(&sb, 0x70);
    let used = le64(&sb, 0x78);
    if used <= total {
        fs.size = Some(total);
        fs.used = Some(used);
    } else {
        fs.problem = Some(format!("btrfs says {used} of {total} bytes used"));
    }
    Ok(Some(fs))
}

/// Page sizes a swap signature may end: 4 KiB (x86), up to 64 KiB (arm64,
/// ppc64).
const SWAP_PAGE_SIZES: [u64; 5] = [4096, 8192, 16384, 32768, 65536];

/// The swap page size and signature of `part`, if it is swap.
fn swap_page(part: &Region) -> Result<Option<(u64, [u8; 10])>> {
    for page in SWAP_PAGE_SIZES {
        let mut sig = [0u8; 10];
        if !part.probe(page - 10, &mut sig)? {
            break;
        }
        if matches!(
            &sig,
            b"SWAPSPACE2" | b"SWAP-SPACE" | b"S1SUSPEND\0" | b"S2SUSPEND\0" | b"ULSUSPEND\0"
        ) || sig.starts_with(b"LINHIB0001")
        {
            return Ok(Some((page, sig)));
        }
    }
    Ok(None)
}

fn swap(part: &Region) -> Result<Option<Filesystem>> {
    let Some((page, sig)) = swap_page(part)? else {
        return Ok(None);
    };
    let mut fs = Filesystem::new(FsType::Swap);
    fs.block_size = Some(page as u32);
    if &sig == b"SWAP-SPACE" {
        fs.version = Some("0".into());
        return Ok(Some(fs));
    }
    if &sig != b"SWAPSPACE2" {
        fs.version = Some("suspend".into());
    }
    let mut h = [0u8; 1024 + 44];
    part.read(0, &mut h, &|| "the swap header".into())?;
    let (version, last_page) = match (le32(&h, 1024), be32(&h, 1024)) {
        (1, _) => (1, le32(&h, 1028)),
        (_, 1) => (1, be32(&h, 1028)),
        (v, _) => (v, 0),
    };
    if fs.version.is_none() {
        fs.version = Some(version.to_string());
    }
    fs.uuid = uuid(&h[1036..1052]);
    fs.label = label(&h[1052..1068]);
    if version != 1 {
        fs.problem = Some(format!("swap header version {version}"));
    } else {
        let size = (u64::from(last_page) + 1) * page;
        if size <= part.len() {
            fs.size = Some(size);
        } else {
            fs.problem = Some(format!(
                "swap header says {size} bytes in a {}-byte partition",
                part.len()
            ));
        }
    }
    Ok(Some(fs))
}

/// The ranges to capture of a swap area: its header page.
pub(crate) fn swap_header_range(part: &Region) -> Result<Vec<(u64, u64)>> {
    match swap_page(part)? {
        Some((page, _)) => Ok(vec![(0, page)]),
        None => Err(part.corrupt("no swap signature at the end of its first page")),
    }
}

fn ntfs(part: &Region) -> Result<Option<Filesystem>> {
    let mut bs = [0u8; 512];
    if !part.probe(0, &mut bs)? || &bs[3..11] != b"NTFS    " {
        return Ok(None);
    }
    let mut fs = Filesystem::new(FsType::Ntfs);
    fs.uuid = Some(format!("{:016X}", le64(&bs, 72)));
    let sector = u64::from(le16(&bs, 11));
    let spc = match bs[13] {
        n @ 1..=0x80 => u64::from(n),
        n if n > 0xf3 => 1u64 << (256 - u32::from(n)),
        _ => 0,
    };
    if !sector.is_power_of_two() || !(256..=4096).contains(&sector) || !spc.is_power_of_two() {
        fs.problem = Some(format!(
            "ntfs boot sector: {sector}-byte sectors, {spc} per cluster"
        ));
        return Ok(Some(fs));
    }
    let cluster = sector * spc;
    fs.block_size = u32::try_from(cluster).ok();
    fs.size = le64(&bs, 40)
        .checked_mul(sector)
        .filter(|&s| s <= part.len());
    // $Volume is MFT record 3; its VOLUME_NAME attribute (0x60) is the label.
    let record = match bs[64] as i8 {
        n @ 1..=127 => u64::from(n as u8) * cluster,
        n @ -31..=-9 => 1u64 << (-i32::from(n)),
        _ => 0,
    };
    let mft = le64(&bs, 48).checked_mul(cluster);
    if let Some(at) = mft.and_then(|m| m.checked_add(3 * record)) {
        if (512..=65536).contains(&record) {
            let mut r = vec![0u8; record as usize];
            if part.probe(at, &mut r)? {
                fs.label = ntfs_volume_name(&mut r);
            }
        }
    }
    Ok(Some(fs))
}

/// The VOLUME_NAME of an MFT record (applying its update sequence first).
fn ntfs_volume_name(r: &mut [u8]) -> Option<String> {
    if &r[..4] != b"FILE" {
        return None;
    }
    let usa = usize::from(le16(r, 4));
    let count = usize::from(le16(r, 6));
    if count == 0 || usa + 2 * count > r.len() || (count - 1) * 512 > r.len() {
        return None;
    }
    let check = [r[usa], r[usa + 1]];
    for i in 1..count {
        let end = i * 512;
        if r[end - 2..end] != check {
            return None;
        }
        r[end - 2] = r[usa + 2 * i];
        r[end - 1] = r[usa + 2 * i + 1];
    }
    let mut at = usize::from(le16(r, 20));
    // Each attribute is at least 16 bytes, so this walk ends.
    while at + 24 <= r.len() {
        let kind = le32(r, at);
        let len = le32(r, at + 4) as usize;
        if kind == 0xffff_ffff || len < 16 || at + len > r.len() {
            return None;
        }
        if kind == 0x60 && r[at + 8] == 0 {
            let vlen = le32(r, at + 16) as usize;
            let voff = usize::from(le16(r, at + 20));
            if voff + vlen > len {
                return None;
            }
            let v = &r[at + voff..at + voff + vlen];
            let units: Vec<u16> = v.chunks_exact(2).map(|c| le16(c, 0)).collect();
            let s = String::from_utf16_lossy(&units);
            return (!s.is_empty()).then_some(s);
        }
        at += len;
    }
    None
}
