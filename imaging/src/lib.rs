//! ferry's image engine.
//!
//! Disks are captured into a content-addressed **library**: streams are cut
//! into chunks by FastCDC ([`chunker`]), each chunk named by the BLAKE3 of its
//! bytes ([`chunk`]), compressed when that pays (LZ4 by default; zstd at a
//! chosen level in a library created with it, see [`library`]), and appended to
//! ~16 MiB **packs** ([`pack`]). An **index** ([`index`]) says where each
//! chunk lives; a **chunk list** ([`chunklist`]) gives a stream's content in
//! order, with zero runs as holes; a **manifest** ([`manifest`]) describes an
//! image. A chunk is stored once, however many images use it.
//!
//! - [`capture::capture`] reads disk images and block devices, skipping the
//!   holes of sparse files and storing zero runs as holes.
//! - [`restore::restore`] verifies every chunk before writing it, reuses what
//!   the target already holds (seeding) and so resumes after interruption.
//! - [`verify`] and [`gc`] check and prune a library.
//!
//! Storage is behind the [`store::Store`] trait; [`store::LocalStore`] (a
//! directory) is the default; [`remote`] opens libraries served over HTTPS
//! or kept in S3 from a URL. Every write is atomic (temp file, fsync,
//! rename) and ordered packs → index → chunk lists → manifest, so a crash at
//! any moment leaves a library in which nothing referenced is missing.
//!
//! On-disk format version 1 throughout, except the library config, which is
//! version 2 in a library created with zstd (its packs and index files may
//! then hold zstd records, codec 2); each module documents its format.
#![warn(missing_docs)]
#![deny(unsafe_code)]

pub mod binfmt;
pub mod capture;
pub mod chunk;
pub mod chunker;
pub mod chunklist;
pub mod device;
pub mod direct;
pub mod disk;
pub mod error;
pub mod ext4;
pub mod gc;
pub mod index;
pub mod library;
pub mod manifest;
pub mod pack;
pub mod progress;
pub mod remote;
pub mod restore;
pub mod server;
pub mod store;
pub mod stream;
pub mod tree;
pub mod verify;

pub use capture::{capture, CaptureRequest, DiskMode};
pub use chunk::{ChunkId, VerifiedChunk};
pub use chunker::ChunkerParams;
pub use error::{Error, Result};
pub use library::Library;
pub use manifest::Manifest;
pub use progress::{NoProgress, Progress, ProgressSink};
pub use restore::{restore, RestoreOptions, RestoreStats};
