//! drivers-db: which kernel modules a machine needs, and where to get them.
//!
//! Implemented so far (issue 5, first piece):
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
//!
//! Still to come: each module's `.modinfo` (also from `.ko.xz` and `.ko.zst`),
//! the second, virtio-bus step behind `virtio_pci` as a planning rule, and the
//! driver library (module trees per kernel version harvested from Debian
//! kernel packages).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod error;
pub mod fnmatch;
pub mod matcher;
pub mod modalias;

pub use error::ModulesError;
pub use fnmatch::Pattern;
pub use matcher::{KernelModules, ModuleMatch};
