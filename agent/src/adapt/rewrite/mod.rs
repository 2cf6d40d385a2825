//! Configuration rewrites of OS adaptation: pure functions from a file's
//! text to a [`Rewritten`] text with the [`Edit`]s made and warnings.
//!
//! The caller (`ferry adapt`) reads the files of the mounted target, calls
//! these functions, writes back what changed (keeping a backup) and puts
//! the edits into its report. Nothing here touches the file system.
//!
//! - [`devmap`]: which file system a device reference means, and its stable
//!   name.
//! - [`fstab`], [`crypttab`]: device columns to `UUID=`; `nofail`; network
//!   mounts commented out.
//! - [`cmdline`], [`grub`], [`bls`], [`resume`]: `root=` and `resume=` on
//!   kernel command lines wherever they are kept.
//! - [`hosts`]: `/etc/hosts` entries for the moved hosts.
//! - [`network`]: static to DHCP, interface names and pins.
//!
//! Every rewrite keeps comments, blank lines and the layout of untouched
//! lines, never deletes a line (what no longer applies is commented out
//! behind `# ferry: `), returns its input byte for byte when it changes
//! nothing, and is idempotent.

mod document;
mod edit;
mod fields;
#[cfg(test)]
mod proptests;
mod shell;
#[cfg(test)]
mod testmap;

pub mod bls;
pub mod cmdline;
pub mod crypttab;
pub mod devmap;
pub mod fstab;
pub mod grub;
pub mod hosts;
pub mod network;
pub mod resume;

pub use devmap::{DeviceMap, FsIdentity, SourceDisk};
pub use edit::{Edit, Rewritten};
