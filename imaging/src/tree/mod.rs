//! File-tree streams: capture, restore, browse.

pub mod browse;
pub mod capture;
pub mod entry;
pub(crate) mod ext4src;
pub mod read;
pub mod restore;
pub mod walk;
pub mod xattr;

pub use entry::{Bytes, Content, Entry, FileExtent, Kind};
