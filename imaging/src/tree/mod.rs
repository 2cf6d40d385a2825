//! File-tree streams: capture, restore, browse; and populating a file
//! system from an ext4 tree read out of a block stream ([`populate`]).

pub mod browse;
pub mod capture;
pub mod entry;
pub(crate) mod ext4src;
pub mod populate;
pub mod read;
pub mod restore;
pub mod walk;
pub mod xattr;

pub use entry::{Bytes, Content, Entry, FileExtent, Kind};
