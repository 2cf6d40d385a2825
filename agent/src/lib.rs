//! agent: what `ferry agent` does on the machine being moved.
//!
//! Deploy (issue 4): [`table`] describes and writes partition tables,
//! `plan` maps a server image onto target disks, `mkfs` makes, grows and
//! checks file systems, and `deploy` executes a plan.
//!
//! Issue 5: [`survey`] records a machine's hardware from its sysfs, and
//! [`adapt`] makes a deployed server boot on new hardware (driver
//! injection, initramfs rebuild and check, UUID rewrites, hosts, network,
//! boot loader). Still to come (issue 6): the mailbox client and PID-1 mode
//! in the ramdisk.
// Only `blockdev`'s BLKRRPART ioctl needs unsafe, allowed there with a
// SAFETY note.
#![deny(unsafe_code)]

pub mod adapt;
pub mod blockdev;
pub mod deploy;
pub mod mailbox;
pub mod mkfs;
pub mod plan;
pub mod runner;
pub mod ramdisk;
pub mod survey;
pub mod table;
pub mod tool;
