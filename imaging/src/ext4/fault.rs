//! What went wrong while parsing, before the caller adds where.
//!
//! Low-level parsers know the inode, block and byte offset of a problem but
//! not the path inside the file system; [`Fault`] carries their message up
//! to the walk, which turns it into a [`crate::Error`] naming the source and
//! the path (`disk.img:/etc/passwd`).

use std::io;

use crate::error::Error;

/// A problem found in the file system or its source.
#[derive(Debug)]
pub(crate) enum Fault {
    /// The bytes are inconsistent (what, where: inode, block, byte offset).
    Corrupt(String),
    /// Valid ext4 that ferry cannot read (a feature, an inode kind).
    Unsupported(String),
    /// Reading the source failed.
    Io {
        /// what was being read, with the byte offset
        what: String,
        /// the OS error
        source: io::Error,
    },
}

/// Result with [`Fault`].
pub(crate) type Parsed<T> = std::result::Result<T, Fault>;

/// Shorthand for `Err(Fault::Corrupt(..))` with a formatted message.
macro_rules! corrupt {
    ($($arg:tt)*) => {
        Err($crate::ext4::fault::Fault::Corrupt(format!($($arg)*)))
    };
}
pub(crate) use corrupt;

/// Shorthand for `Err(Fault::Unsupported(..))` with a formatted message.
macro_rules! unsupported {
    ($($arg:tt)*) => {
        Err($crate::ext4::fault::Fault::Unsupported(format!($($arg)*)))
    };
}
pub(crate) use unsupported;

impl Fault {
    /// Prefixes the message with `context` ("inode 12: …").
    pub(crate) fn context(self, context: impl std::fmt::Display) -> Fault {
        match self {
            Fault::Corrupt(m) => Fault::Corrupt(format!("{context}: {m}")),
            Fault::Unsupported(m) => Fault::Unsupported(format!("{context}: {m}")),
            Fault::Io { what, source } => Fault::Io {
                what: format!("{context}: {what}"),
                source,
            },
        }
    }

    /// The crate error for this fault, found in `source` at `fs_path`
    /// (`None`: the file system as a whole).
    pub(crate) fn at(self, source: &str, fs_path: Option<&[u8]>) -> Error {
        let place = match fs_path {
            Some(p) => format!("{source}:/{}", String::from_utf8_lossy(p)),
            None => source.to_string(),
        };
        match self {
            Fault::Corrupt(reason) => Error::Corrupt {
                path: place,
                reason: format!("ext4: {reason}"),
            },
            Fault::Unsupported(reason) => Error::Source {
                path: place,
                reason: format!("ext4: {reason}"),
            },
            Fault::Io { what, source } => Error::io(
                "reading",
                place,
                io::Error::new(source.kind(), format!("{what}: {source}")),
            ),
        }
    }
}
