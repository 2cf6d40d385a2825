//! boot: the media that bring the ferry agent onto a machine.
//!
//! It will own (issue 6): the agent initramfs (a newc cpio with `ferry` as
//! init, busybox, the deploy tools with their libraries, and kernel modules
//! chosen with drivers-db), the hybrid ISO that boots under BIOS and UEFI,
//! the PXE bundle (kernel, initramfs, iPXE script, grub/pxelinux config),
//! and the ramdisk swap that moves a running Linux machine onto the agent by
//! kexec or a one-shot grub entry.
//!
//! Implemented so far: [`swap`], the ramdisk swap.
#![forbid(unsafe_code)]

pub mod swap;
