//! Journal (jbd2) recovery, in memory.
//!
//! A file system that was not cleanly unmounted has `needs_recovery` set
//! and committed transactions in its journal whose blocks may not yet be
//! at their final place. The kernel (or e2fsck) would copy them there
//! before use. ferry never writes to the source, so [`replay`] computes the
//! same result as a map from file-system block to the journal block that
//! holds its newest committed copy ([`Overlay`]). Every read, ferry's own
//! and `ext4-view`'s, then goes through that map, so both see the file
//! system exactly as recovery would leave it.
//!
//! This follows the kernel's `do_one_pass`: scan from `s_start` with
//! sequence `s_sequence`, wrapping at `s_maxlen` to `s_first`, until a
//! block lacks the magic or has the wrong sequence; only transactions
//! with a (valid) commit block count; a block is skipped if a committed
//! revoke record for it has the same or a later sequence; with journal
//! checksums (v2 or v3) descriptor, revoke and commit blocks must verify
//! (or the log ends there) and data blocks whose tag checksum fails are
//! skipped, as the kernel does. Journal superblock v1 and v2, 32- and
//! 64-bit block numbers, escaped blocks and journals without checksums
//! are handled. Fast-commit journals that need recovery, and external
//! journal devices, are refused with an error.

use std::collections::HashMap;

use super::blocks::{runs, Run};
use super::crc32c::crc32c;
use super::fault::{corrupt, unsupported, Parsed};
use super::inode::read_inode;
use super::raw::{be16, be32, us};
use super::source::{JournalCopy, Overlay, JBD2_MAGIC};
use super::superblock::{compat, incompat};
use super::{Budget, Vol};

const BLOCK_DESCRIPTOR: u32 = 1;
const BLOCK_COMMIT: u32 = 2;
const BLOCK_SUPERBLOCK_V1: u32 = 3;
const BLOCK_SUPERBLOCK_V2: u32 = 4;
const BLOCK_REVOKE: u32 = 5;

const FEATURE_REVOKE: u32 = 0x1;
const FEATURE_64BIT: u32 = 0x2;
const FEATURE_ASYNC_COMMIT: u32 = 0x4;
const FEATURE_CSUM_V2: u32 = 0x8;
const FEATURE_CSUM_V3: u32 = 0x10;
const FEATURE_FAST_COMMIT: u32 = 0x20;
const KNOWN_INCOMPAT: u32 = FEATURE_REVOKE
    | FEATURE_64BIT
    | FEATURE_ASYNC_COMMIT
    | FEATURE_CSUM_V2
    | FEATURE_CSUM_V3
    | FEATURE_FAST_COMMIT;

const TAG_ESCAPE: u32 = 0x1;
const TAG_SAME_UUID: u32 = 0x2;
const TAG_LAST: u32 = 0x8;

/// `JBD2_CRC32C_CHKSUM`.
const CHECKSUM_CRC32C: u8 = 4;

/// A logged block: where it goes and where the journal holds it.
struct Tag {
    fs_block: u64,
    /// Logical block in the journal.
    log_block: u64,
    escaped: bool,
    checksum: u32,
}

/// One committed transaction.
struct Transaction {
    sequence: u32,
    tags: Vec<Tag>,
    revoked: Vec<u64>,
}

/// The journal's geometry and features.
struct Journal<'a> {
    v: Vol<'a>,
    runs: Vec<Run>,
    block_size: usize,
    first: u64,
    maxlen: u64,
    incompat: u32,
    csum_seed: u32,
}

impl Journal<'_> {
    fn csum(&self) -> bool {
        self.incompat & (FEATURE_CSUM_V2 | FEATURE_CSUM_V3) != 0
    }

    fn physical(&self, log_block: u64) -> Parsed<u64> {
        let i = self
            .runs
            .partition_point(|r| r.logical + r.len <= log_block);
        match self.runs.get(i) {
            Some(r) if r.logical <= log_block && !r.unwritten => {
                Ok(r.physical + (log_block - r.logical))
            }
            _ => corrupt!("journal block {log_block} is not mapped to a disk block"),
        }
    }

    fn read(&self, log_block: u64, buf: &mut [u8]) -> Parsed<()> {
        let p = self.physical(log_block)?;
        let off = p * self.v.sb.bs();
        self.v
            .r
            .read_at(off, buf)
            .map_err(|f| f.context(format!("journal block {log_block} (byte {off})")))
    }

    fn next(&self, log_block: u64) -> u64 {
        if log_block + 1 >= self.maxlen {
            self.first
        } else {
            log_block + 1
        }
    }

    /// Descriptor and revoke blocks end in a 4-byte checksum of the block.
    fn tail_ok(&self, block: &[u8]) -> bool {
        if !self.csum() {
            return true;
        }
        let t = self.block_size - 4;
        let mut c = crc32c(self.csum_seed, &block[..t]);
        c = crc32c(c, &[0; 4]);
        be32(block, t) == c
    }

    fn commit_ok(&self, block: &[u8]) -> bool {
        if !self.csum() {
            return true;
        }
        let mut c = crc32c(self.csum_seed, &block[..16]);
        c = crc32c(c, &[0; 4]);
        c = crc32c(c, &block[20..]);
        be32(block, 16) == c
    }

    fn tag_bytes(&self) -> usize {
        if self.incompat & FEATURE_CSUM_V3 != 0 {
            return 16;
        }
        let mut n = 12;
        if self.incompat & FEATURE_CSUM_V2 != 0 {
            n += 2;
        }
        if self.incompat & FEATURE_64BIT == 0 {
            n -= 4;
        }
        n
    }

    /// Reads the log from `start` and returns its committed transactions.
    fn scan(&self, start: u64, mut sequence: u32) -> Parsed<Vec<Transaction>> {
        let mut done = Vec::new();
        let mut cur = Transaction {
            sequence,
            tags: Vec::new(),
            revoked: Vec::new(),
        };
        let mut block = vec![0u8; self.block_size];
        let log_len = self.maxlen - self.first;
        let mut steps = 0u64;
        let mut at = start;
        let end = if self.csum() {
            self.block_size - 4
        } else {
            self.block_size
        };
        'log: while steps < log_len {
            self.read(at, &mut block)?;
            steps += 1;
            if be32(&block, 0) != JBD2_MAGIC || be32(&block, 8) != sequence {
                break;
            }
            match be32(&block, 4) {
                BLOCK_DESCRIPTOR => {
                    if !self.tail_ok(&block) {
                        break;
                    }
                    let size = self.tag_bytes();
                    let mut off = 12;
                    let mut data = at;
                    loop {
                        if off + size > end {
                            break 'log;
                        }
                        let t = &block[off..off + size];
                        let (flags, checksum) = if self.incompat & FEATURE_CSUM_V3 != 0 {
                            (be32(t, 4), be32(t, 12))
                        } else {
                            (u32::from(be16(t, 6)), u32::from(be16(t, 4)))
                        };
                        let mut fs_block = u64::from(be32(t, 0));
                        if self.incompat & FEATURE_64BIT != 0 {
                            fs_block |= u64::from(be32(t, 8)) << 32;
                        }
                        off += size;
                        if flags & TAG_SAME_UUID == 0 {
                            off += 16;
                        }
                        data = self.next(data);
                        steps += 1;
                        if steps > log_len {
                            break 'log;
                        }
                        cur.tags.push(Tag {
                            fs_block,
                            log_block: data,
                            escaped: flags & TAG_ESCAPE != 0,
                            checksum,
                        });
                        if flags & TAG_LAST != 0 {
                            break;
                        }
                    }
                    at = self.next(data);
                }
                BLOCK_COMMIT => {
                    if !self.commit_ok(&block) {
                        break;
                    }
                    sequence = sequence.wrapping_add(1);
                    done.push(std::mem::replace(
                        &mut cur,
                        Transaction {
                            sequence,
                            tags: Vec::new(),
                            revoked: Vec::new(),
                        },
                    ));
                    at = self.next(at);
                }
                BLOCK_REVOKE => {
                    if !self.tail_ok(&block) {
                        break;
                    }
                    let count = us(be32(&block, 12));
                    let rec = if self.incompat & FEATURE_64BIT != 0 {
                        8
                    } else {
                        4
                    };
                    if !(16..=end).contains(&count) {
                        break;
                    }
                    let mut off = 16;
                    while off + rec <= count {
                        let b = if rec == 8 {
                            u64::from(be32(&block, off)) << 32 | u64::from(be32(&block, off + 4))
                        } else {
                            u64::from(be32(&block, off))
                        };
                        cur.revoked.push(b);
                        off += rec;
                    }
                    at = self.next(at);
                }
                _ => break,
            }
        }
        Ok(done)
    }

    /// Whether a logged data block's checksum matches its tag.
    fn data_ok(&self, tag: &Tag, sequence: u32, data: &[u8]) -> bool {
        if !self.csum() {
            return true;
        }
        let c = crc32c(crc32c(self.csum_seed, &sequence.to_be_bytes()), data);
        if self.incompat & FEATURE_CSUM_V3 != 0 {
            c == tag.checksum
        } else {
            c & 0xffff == tag.checksum
        }
    }
}

/// `tid_gt`: sequence `a` is after `b`, modulo wrap-around.
fn after(a: u32, b: u32) -> bool {
    i32::from_ne_bytes(a.wrapping_sub(b).to_ne_bytes()) > 0
}

/// Computes the overlay recovery would produce (empty if none is needed).
pub(crate) fn replay(v: Vol<'_>) -> Parsed<Overlay> {
    let sb = v.sb;
    let mut overlay = Overlay {
        block_size: sb.bs(),
        ..Overlay::default()
    };
    if sb.compat & compat::HAS_JOURNAL == 0 || sb.incompat & incompat::RECOVER == 0 {
        return Ok(overlay);
    }
    if sb.incompat & incompat::JOURNAL_DEV != 0 {
        return unsupported!("this is an external journal device, not a file system");
    }
    if sb.journal_inum == 0 {
        return unsupported!(
            "the file system needs journal recovery from an external journal device (device {:#x}, UUID {}), which ferry cannot read; replay it with e2fsck on a copy first",
            sb.journal_dev,
            hex::encode(sb.journal_uuid)
        );
    }
    let ji = sb.journal_inum;
    let budget = Budget::new(sb.blocks_count.saturating_add(64));
    let inode = read_inode(v, ji).map_err(|f| f.context(format!("journal inode {ji}")))?;
    let bs = sb.bs();
    let jblocks = inode.size / bs;
    if jblocks < 2 {
        return corrupt!("journal inode {ji} is only {} bytes", inode.size);
    }
    let runs =
        runs(v, &inode, jblocks, &budget).map_err(|f| f.context(format!("journal inode {ji}")))?;
    let mut j = Journal {
        v,
        runs,
        block_size: sb.bsz(),
        first: 0,
        maxlen: 0,
        incompat: 0,
        csum_seed: 0,
    };
    let mut jsb = vec![0u8; 1024];
    j.read(0, &mut jsb)?;
    let kind = be32(&jsb, 4);
    if be32(&jsb, 0) != JBD2_MAGIC || (kind != BLOCK_SUPERBLOCK_V1 && kind != BLOCK_SUPERBLOCK_V2) {
        return corrupt!(
            "journal inode {ji}: no journal superblock (magic {:#010x}, type {kind})",
            be32(&jsb, 0)
        );
    }
    let jbs = be32(&jsb, 0xc);
    if u64::from(jbs) != bs {
        return corrupt!("journal block size {jbs} differs from the file system's {bs}");
    }
    j.maxlen = u64::from(be32(&jsb, 0x10));
    j.first = u64::from(be32(&jsb, 0x14));
    let sequence = be32(&jsb, 0x18);
    let start = u64::from(be32(&jsb, 0x1c));
    if start == 0 {
        // An empty log: nothing to replay.
        return Ok(overlay);
    }
    if j.maxlen > jblocks
        || j.first == 0
        || j.first >= j.maxlen
        || start < j.first
        || start >= j.maxlen
    {
        return corrupt!(
            "journal superblock: first {}, start {start}, length {} do not fit a {jblocks}-block journal",
            j.first,
            j.maxlen
        );
    }
    if kind == BLOCK_SUPERBLOCK_V2 {
        j.incompat = be32(&jsb, 0x28);
    }
    let unknown = j.incompat & !KNOWN_INCOMPAT;
    if unknown != 0 {
        return unsupported!("the journal needs recovery and has unknown features {unknown:#x}");
    }
    if j.incompat & FEATURE_FAST_COMMIT != 0 {
        return unsupported!(
            "the journal needs recovery and uses fast commits, which ferry cannot replay; replay it with e2fsck on a copy first"
        );
    }
    if j.csum() {
        let ty = jsb[0x50];
        if ty != CHECKSUM_CRC32C {
            return unsupported!("journal checksum type {ty} is not crc32c");
        }
        let mut c = crc32c(!0, &jsb[..0xfc]);
        c = crc32c(c, &[0; 4]);
        c = crc32c(c, &jsb[0x100..]);
        if be32(&jsb, 0xfc) != c {
            return corrupt!(
                "journal superblock checksum {:#010x} does not match its contents ({c:#010x})",
                be32(&jsb, 0xfc)
            );
        }
        j.csum_seed = crc32c(!0, &jsb[0x30..0x40]);
    }

    let transactions = j.scan(start, sequence)?;
    let mut revoked: HashMap<u64, u32> = HashMap::new();
    for t in &transactions {
        for &b in &t.revoked {
            revoked.insert(b, t.sequence);
        }
    }
    let mut data = vec![0u8; j.block_size];
    for t in &transactions {
        for tag in &t.tags {
            if revoked
                .get(&tag.fs_block)
                .is_some_and(|&r| !after(t.sequence, r))
            {
                continue;
            }
            if tag.fs_block >= sb.blocks_count {
                tracing::warn!(
                    block = tag.fs_block,
                    "journal logs a block past the end of the file system; skipped"
                );
                continue;
            }
            if j.csum() {
                j.read(tag.log_block, &mut data)?;
                if !j.data_ok(tag, t.sequence, &data) {
                    tracing::warn!(
                        block = tag.fs_block,
                        journal_block = tag.log_block,
                        "journal copy of a block fails its checksum; skipped, as the kernel does"
                    );
                    continue;
                }
            }
            let block = j.physical(tag.log_block)?;
            overlay.blocks.insert(
                tag.fs_block,
                JournalCopy {
                    block,
                    escaped: tag.escaped,
                },
            );
        }
    }
    tracing::info!(
        transactions = transactions.len(),
        blocks = overlay.blocks.len(),
        "replayed the journal in memory"
    );
    Ok(overlay)
}

#[cfg(test)]
mod tests {
    use super::after;

    #[test]
    fn sequence_comparison_wraps() {
        assert!(after(2, 1));
        assert!(!after(1, 1));
        assert!(after(0, u32::MAX));
        assert!(!after(u32::MAX, 0));
    }
}
