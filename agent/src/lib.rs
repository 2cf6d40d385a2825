//! agent: what `ferry agent` does on the machine being moved.
//!
//! Deploy (issue 4): [`table`] describes and writes partition tables,
//! `plan` maps a server image onto target disks, `mkfs` makes, grows and
//! checks file systems, and `deploy` executes a plan.
//!
//! Issue 5: [`survey`] records a machine's hardware from its sysfs, and
//! [`adapt`] makes a deployed server boot on new hardware (driver
//! injection, initramfs rebuild and check, UUID rewrites, hosts, network,
//! boot loader).
//!
//! Issue 6: [`mailbox`] is the protocol agents and managers share, and
//! [`runner`] the agent's command loop on it (status, heartbeat, commands).
// Only `blockdev`'s BLKRRPART ioctl and `runner::kexec`'s kexec_file_load
// need unsafe, allowed there with SAFETY notes.
#![deny(unsafe_code)]

pub mod adapt;
pub mod blockdev;
pub mod deploy;
pub mod firstboot;
pub mod mailbox;
pub mod mkfs;
pub mod plan;
pub mod ramdisk;
pub mod runner;
pub mod survey;
pub mod table;
pub mod tool;
