//! drivers-db: which kernel modules a machine needs, and where to get them.
//!
//! It will own (issue 5): parsing a kernel tree's `modules.alias`,
//! `modules.dep`, `modules.builtin` and `modules.softdep`; fnmatch-style
//! matching of device modaliases (`pci:`, `virtio:`, `vmbus:`, `xen:`,
//! `acpi:`, `platform:`, `scsi:`) against them, including the second,
//! virtio-bus step behind `virtio_pci`; the dependency closure with each
//! module's `.modinfo` (also from `.ko.xz` and `.ko.zst`); and the driver
//! library, a directory of module trees per kernel version harvested from
//! Debian kernel packages.
//!
//! Nothing is implemented yet: this crate is a documented placeholder in the
//! workspace layout so that dependencies keep pointing one way.
#![forbid(unsafe_code)]
