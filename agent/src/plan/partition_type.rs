//! Partition types across schemes: MBR type codes and GPT type GUIDs.
//!
//! Used when a table changes scheme (MBR → GPT for UEFI, GPT → MBR when
//! asked). Types with no counterpart are refused rather than guessed.

/// EFI system partition.
pub(crate) const ESP_GUID: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
/// BIOS boot partition (GRUB's `core.img` on GPT).
pub(crate) const BIOS_BOOT_GUID: &str = "21686148-6449-6e6f-744e-656564454649";
/// Linux file system data.
const LINUX_GUID: &str = "0fc63daf-8483-4772-8e79-3d69d8477de4";

/// MBR type code of an EFI system partition.
pub(crate) const ESP_CODE: u8 = 0xef;
/// MBR type code of an extended partition (CHS/LBA, what fdisk writes).
pub(crate) const EXTENDED_CODE: u8 = 0x05;

/// MBR code ↔ GPT type GUID, for every type with a counterpart. The first
/// row for a code or a GUID is the one a conversion picks.
const TYPES: &[(u8, &str)] = &[
    (0x83, LINUX_GUID),
    (0x82, "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f"), // Linux swap
    (ESP_CODE, ESP_GUID),
    (0x8e, "e6d6d379-f507-44c2-a23c-238f2a3df928"), // Linux LVM
    (0xfd, "a19d880f-05fc-4d3b-a006-743f0f84911e"), // Linux RAID
    (0x07, "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7"), // Microsoft basic data
    (0x0c, "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7"), // FAT32 (LBA)
    (0x0b, "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7"), // FAT32
    (0x0e, "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7"), // FAT16 (LBA)
    (0x06, "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7"), // FAT16
    (0xea, "bc13c2ff-59e6-4262-a352-b275fd6f7172"), // XBOOTLDR (/boot)
    (0x83, "4f68bce3-e8cd-4db1-96e7-fbcaf984b709"), // root x86-64
    (0x83, "44479540-f297-41b2-9af7-d131d5f0458a"), // root x86
    (0x83, "b921b045-1df0-41c3-af44-4c6f280d3fae"), // root arm64
    (0x83, "8484680c-9521-48c6-9c11-b0720656f69e"), // /usr x86-64
    (0x83, "b0e01050-ee5f-4390-949a-9101b17104e9"), // /usr arm64
    (0x83, "933ac7e1-2eb4-4f13-b844-0e14e2aef915"), // /home
    (0x83, "3b8f8425-20e0-4f3b-907f-1a25a76f98e8"), // /srv
    (0x83, "4d21b016-b534-45c2-a9fb-5c16e091fd2d"), // /var
    (0x83, "7ec6f557-3bc5-4aca-b293-16ef5df639d1"), // /var/tmp
];

/// The GPT type GUID for an MBR type code, if it has one.
pub(crate) fn gpt_type(code: u8) -> Option<&'static str> {
    TYPES.iter().find(|(c, _)| *c == code).map(|&(_, g)| g)
}

/// The MBR type code for a GPT type GUID (any case), if it has one.
pub(crate) fn mbr_type(guid: &str) -> Option<u8> {
    TYPES
        .iter()
        .find(|(_, g)| g.eq_ignore_ascii_case(guid))
        .map(|&(c, _)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_types_convert_both_ways() {
        assert_eq!(gpt_type(0x83), Some(LINUX_GUID));
        assert_eq!(gpt_type(0x82), Some("0657fd6d-a4ab-43c4-84e5-0933c84b4f4f"));
        assert_eq!(gpt_type(0xef), Some(ESP_GUID));
        assert_eq!(mbr_type("0FC63DAF-8483-4772-8E79-3D69D8477DE4"), Some(0x83));
        assert_eq!(mbr_type("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"), Some(0x83));
        assert_eq!(mbr_type(BIOS_BOOT_GUID), None);
        assert_eq!(gpt_type(0xa5), None);
    }
}
