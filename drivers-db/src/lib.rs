//! drivers-db: which kernel modules a machine needs, and where to get them.
//!
//! - [`modalias`]: parsers for a kernel tree's `modules.alias`,
//!   `modules.dep`, `modules.builtin`, `modules.softdep` and
//!   `modules.builtin.modinfo` (the text files `depmod` writes; the `.bin`
//!   indexes are not read).
//! - [`fnmatch`]: the glob matching kmod uses to match a device modalias
//!   against alias patterns.
//! - [`matcher`]: [`KernelModules`], one loaded `/lib/modules/VERSION` tree,
//!   answering "which modules claim this modalias" (`pci:`, `virtio:`,
//!   `acpi:`, `platform:`, `scsi:`, `vmbus:`, `xen:`, ...) and "what must be
//!   loaded, in which order, for these modules".
//! - [`modinfo`]: a module file's `.modinfo` ([`elf`] finds the section,
//!   [`compression`] decodes `.ko.xz`, `.ko.zst` and `.ko.gz`).
//! - [`virtio`]: the virtio-bus modalias behind a virtio PCI device.
//! - [`library`]: [`DriverLibrary`], module trees per kernel version, added
//!   from Debian `linux-image-*` packages ([`deb`]) or `/lib/modules/VERSION`
//!   directories, through [`staging`]'s guarded writer; trees without indexes
//!   get them from `depmod` or from [`depmod`], ferry's own generator.
//! - [`plan`]: [`Planner`] turns device modaliases into a [`DriverPlan`]:
//!   modules in load order, each from the image's kernel, its tree or the
//!   library, their firmware, unclaimed devices and missing modules.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod compression;
pub mod deb;
pub mod depmod;
pub mod elf;
pub mod error;
pub mod fnmatch;
pub mod library;
pub mod matcher;
pub mod modalias;
pub mod modinfo;
pub mod plan;
pub mod staging;
pub mod virtio;

pub use error::{LibraryError, ModinfoError, ModulesError};
pub use fnmatch::Pattern;
pub use library::{AddReport, AddedKernel, DriverLibrary, IndexSource};
pub use matcher::{KernelModules, ModuleMatch};
pub use modinfo::Modinfo;
pub use plan::{DriverPlan, ModuleSource, Planner};
pub use virtio::virtio_bus_modalias;
