//! One file-system object in a file-tree stream, and its serialised form.
//!
//! A file tree is stored as two kinds of data: file contents, chunked into
//! the library exactly like block streams (so identical content dedups across
//! block and file images), and a **metadata stream** of [`Entry`] records, one
//! JSON object per line, itself chunked and stored like any stream. Keeping
//! metadata apart means a changed timestamp rewrites a metadata chunk, never
//! shifts file-data chunk boundaries.
//!
//! Entries come in walk order: depth first, names sorted bytewise, every
//! directory before its contents; the root (path `""`) first. Byte strings
//! (paths, link targets, xattr names and values) are JSON strings when they
//! are UTF-8 and `{"hex": "…"}` otherwise, so any file name round-trips.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::chunk::ChunkId;

/// Bytes that serialise as a string when UTF-8, else as `{"hex": …}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bytes(pub Vec<u8>);

impl Bytes {
    /// As text for messages (lossy).
    pub fn display(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

impl From<&[u8]> for Bytes {
    fn from(b: &[u8]) -> Self {
        Bytes(b.to_vec())
    }
}

impl From<&str> for Bytes {
    fn from(s: &str) -> Self {
        Bytes(s.as_bytes().to_vec())
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(text) => s.serialize_str(text),
            Err(_) => {
                use serde::ser::SerializeMap;
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("hex", &hex::encode(&self.0))?;
                m.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Text(String),
            Hex { hex: String },
        }
        match Form::deserialize(d)? {
            Form::Text(t) => Ok(Bytes(t.into_bytes())),
            Form::Hex { hex } => hex::decode(hex).map(Bytes).map_err(D::Error::custom),
        }
    }
}

/// What kind of object an entry is. Sockets are never captured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link.
    Symlink,
    /// A character device.
    Char,
    /// A block device.
    Block,
    /// A named pipe.
    Fifo,
}

/// A regular file's content: extents of chunks and holes, as in a chunk list.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Content {
    /// In order; together they cover the file's size.
    pub extents: Vec<FileExtent>,
}

/// A run of a file's content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FileExtent {
    /// A chunk of `len` bytes.
    Chunk {
        /// the chunk
        id: ChunkId,
        /// its length
        len: u32,
    },
    /// `hole` zero bytes, restored as a hole.
    Hole {
        /// bytes
        hole: u64,
    },
}

/// One object in the tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Path relative to the tree root, `/`-separated, no leading `/`; `""`
    /// is the root. Never contains `.` or `..` components or empty ones.
    pub path: Bytes,
    /// Object kind.
    pub kind: Kind,
    /// Permission bits with setuid, setgid and sticky (`mode & 0o7777`).
    pub mode: u32,
    /// Numeric owner.
    pub uid: u32,
    /// Numeric group.
    pub gid: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Nanoseconds part of the modification time.
    pub mtime_ns: u32,
    /// Size in bytes (regular files; 0 otherwise).
    #[serde(default)]
    pub size: u64,
    /// Device number (major, minor) of a device node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdev: Option<(u32, u32)>,
    /// Target of a symlink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Bytes>,
    /// For the second and later names of a hard-linked file: the path of
    /// the first name, which carries the content and metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardlink: Option<Bytes>,
    /// Extended attributes in the kernel's (VFS) format, names in full
    /// (`security.capability`, `system.posix_acl_access`, …), sorted by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xattrs: Vec<(Bytes, Bytes)>,
    /// A regular file's content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    /// Source identity for the files cache: inode number, and the change
    /// time (seconds, nanoseconds). Not restored.
    #[serde(default)]
    pub ino: u64,
    /// Change time, seconds (files cache only).
    #[serde(default)]
    pub ctime: i64,
    /// Change time, nanoseconds (files cache only).
    #[serde(default)]
    pub ctime_ns: u32,
}

/// What the files cache compares: a regular file whose stamp is unchanged
/// is taken to hold the content recorded for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStamp {
    /// Inode number.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time (seconds, nanoseconds).
    pub mtime: (i64, u32),
    /// Change time (seconds, nanoseconds).
    pub ctime: (i64, u32),
}

impl Entry {
    /// The files-cache stamp of this entry.
    pub fn stamp(&self) -> FileStamp {
        FileStamp {
            ino: self.ino,
            size: self.size,
            mtime: (self.mtime, self.mtime_ns),
            ctime: (self.ctime, self.ctime_ns),
        }
    }

    /// An entry with the given path and kind and everything else zero.
    pub fn new(path: impl Into<Bytes>, kind: Kind) -> Self {
        Entry {
            path: path.into(),
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: 0,
            mtime_ns: 0,
            size: 0,
            rdev: None,
            target: None,
            hardlink: None,
            xattrs: Vec::new(),
            content: None,
            ino: 0,
            ctime: 0,
            ctime_ns: 0,
        }
    }
}
