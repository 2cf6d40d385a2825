//! agent: what `ferry agent` does on the machine being moved.
//!
//! It will own (issues 4–6): the hardware and disk survey (PCI modaliases,
//! disks, NICs, firmware), deploy planning onto the target disks,
//! partitioning, mkfs and resize, OS adaptation (driver injection,
//! initramfs rebuild, UUID rewrites, bootloader), the mailbox client, and
//! PID-1 mode in the ramdisk.
//!
//! Nothing is implemented yet: this crate is a documented placeholder in the
//! workspace layout.
#![forbid(unsafe_code)]
