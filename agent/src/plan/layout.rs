//! Placement: where partitions go on a target disk.
//!
//! Partitions are laid out one after the other in the order given, each
//! starting on an [`ALIGN`] boundary; a logical partition leaves one
//! [`ALIGN`] step in front of it for its EBR. The space partitions may use
//! ends before the GPT's backup header and entries, or where MBR stops
//! addressing.

use crate::plan::TableKind;

/// Partition alignment: 1 MiB, a multiple of every erase block, RAID
/// stripe and 4096-byte sector, and what fdisk and parted use.
pub const ALIGN: u64 = 1 << 20;
/// Size of a new EFI system partition: FAT32 needs at least 65,525
/// clusters, which on a 4096-byte-sector disk is over 256 MiB; 512 MiB
/// clears that and leaves room for a few kernel and initramfs pairs when
/// the boot loader reads them from the ESP.
pub const NEW_ESP_SIZE: u64 = 512 << 20;
/// Size of a new BIOS boot partition: GRUB's `core.img` with the modules
/// for LVM or RAID stays well under it, and it is what GRUB's manual
/// recommends.
pub const BIOS_BOOT_SIZE: u64 = 1 << 20;
/// The MBR's boot code area, bytes `[0, 440)`.
pub(crate) const MBR_BOOT_CODE: u64 = 440;
/// A post-MBR gap larger than this is not copied: it cannot be told
/// from data, and GRUB's `core.img` is far smaller.
pub(crate) const MAX_GAP: u64 = 16 << 20;
/// Bytes of the GPT entry array (128 entries of 128 bytes).
const GPT_ENTRIES: u64 = 128 * 128;
/// MBR entries hold 32-bit LBAs.
const MBR_MAX_SECTORS: u64 = u32::MAX as u64;

/// `n` rounded up to a multiple of `to` (saturating).
pub(crate) fn align_up(n: u64, to: u64) -> u64 {
    n.div_ceil(to).saturating_mul(to)
}

/// `n` rounded down to a multiple of `to`.
pub(crate) fn align_down(n: u64, to: u64) -> u64 {
    n / to * to
}

/// The end of the area partitions may use on a disk of `size` bytes with
/// `sector`-byte sectors: before the GPT's backup entries and header, or
/// the last sector an MBR can address.
pub(crate) fn usable_end(kind: TableKind, size: u64, sector: u64) -> u64 {
    let size = align_down(size, sector);
    match kind {
        TableKind::Gpt => size.saturating_sub(sector + align_up(GPT_ENTRIES, sector)),
        TableKind::Mbr => size.min(MBR_MAX_SECTORS * sector),
    }
}

/// One partition to place: its size and whether it is logical.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Slot {
    /// Size in bytes.
    pub(crate) size: u64,
    /// A logical partition (an EBR goes in front of it).
    pub(crate) logical: bool,
}

/// Places `slots` in order from `first` (a multiple of [`ALIGN`]): returns
/// each one's start and the end of the last. A slot whose size is a
/// multiple of [`ALIGN`] moves every later one by exactly its size, which
/// is how the elastic partition is sized (place it at 0, then add).
pub(crate) fn place(first: u64, slots: &[Slot]) -> (Vec<u64>, u64) {
    let mut at = first;
    let starts = slots
        .iter()
        .map(|s| {
            let lead = if s.logical { ALIGN } else { 0 };
            let start = align_up(at.saturating_add(lead), ALIGN);
            at = start.saturating_add(s.size);
            start
        })
        .collect();
    (starts, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt_leaves_33_sectors_at_the_end() {
        assert_eq!(
            usable_end(TableKind::Gpt, 1 << 30, 512),
            (1 << 30) - 33 * 512
        );
        assert_eq!(
            usable_end(TableKind::Gpt, 1 << 30, 4096),
            (1 << 30) - 5 * 4096
        );
    }

    #[test]
    fn mbr_stops_at_2_tib() {
        assert_eq!(
            usable_end(TableKind::Mbr, 3 << 40, 512),
            u64::from(u32::MAX) * 512
        );
        assert_eq!(usable_end(TableKind::Mbr, 1 << 30, 512), 1 << 30);
    }

    #[test]
    fn logical_partitions_get_a_lead_for_their_ebr() {
        let slots = [
            Slot {
                size: 100,
                logical: false,
            },
            Slot {
                size: ALIGN,
                logical: true,
            },
        ];
        let (starts, end) = place(ALIGN, &slots);
        assert_eq!(starts, vec![ALIGN, 3 * ALIGN]);
        assert_eq!(end, 4 * ALIGN);
    }
}
