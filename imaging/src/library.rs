//! The content-addressed library: packs, index files, chunk lists and image
//! manifests in a [`Store`].
//!
//! Layout (keys in the store):
//!
//! ```text
//! ferry-library.json            format tag, version, chunker parameters, compression
//! packs/<h2>/<blake3>.pack      chunk records (see pack)
//! index/<blake3>.idx            chunk → pack locations (see index)
//! lists/<h2>/<blake3>.list      a stream's chunk list (see chunklist)
//! images/<name>.json            manifests (see manifest)
//! lock, tmp/                    local stores only: the flock file, temp files
//! ```
//!
//! `ferry-library.json` is version 1 for a library that compresses new chunks
//! with LZ4 (the default; it has no `compression` key) and version 2 for one
//! created with zstd (`"compression": "zstd:3"`): packs and index files are
//! the same, but may hold codec-2 (zstd) records, so a build that predates
//! zstd refuses such a library when it opens it rather than at its first
//! zstd chunk. The compression is chosen when the library is created and
//! applies to every capture into it; existing chunks are never re-encoded,
//! and every build reads every codec it knows, whatever the setting.
//!
//! Objects other than manifests are named by the BLAKE3 of their content and
//! checked against their name on every read. The write order is packs, then
//! index, then chunk lists, then the manifest, each atomically; so at any
//! moment, everything a manifest refers to exists. Captures hold the library
//! lock shared; `gc` and `rm` hold it exclusively.

use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::chunk::{ChunkId, Compression, ObjectId, VerifiedChunk};
use crate::chunker::ChunkerParams;
use crate::chunklist::ChunkList;
use crate::error::{Error, Result};
use crate::index::{Index, Location};
use crate::manifest::Manifest;
use crate::pack::parse_record;
use crate::store::{LocalStore, LockGuard, LockMode, PendingPut, Store};

/// A new library's configuration, checked, and its bytes.
fn new_config(
    store: &dyn Store,
    chunker: ChunkerParams,
    compression: Compression,
) -> Result<(LibraryConfig, Vec<u8>)> {
    check_settings(&chunker, compression).map_err(|reason| Error::Config {
        library: store.location(),
        reason,
    })?;
    let config = LibraryConfig {
        format: CONFIG_FORMAT.into(),
        version: config_version(compression),
        chunker,
        compression,
    };
    let bytes = serde_json::to_vec_pretty(&config).expect("config serialises");
    Ok((config, bytes))
}

/// A pack being written ([`Library::start_pack`]).
pub struct PendingPack {
    put: PendingPut,
    shown: String,
}

impl PendingPack {
    /// Waits until the pack is durable and puts it in place.
    pub fn finish(self) -> Result<()> {
        self.put
            .finish()
            .map_err(|e| Error::io("writing", self.shown, e))
    }
}

/// Key of the library's configuration.
pub const CONFIG_KEY: &str = "ferry-library.json";
const CONFIG_FORMAT: &str = "ferry-library";
/// The config version for a library's compression: 1 (LZ4) is readable by
/// every ferry; 2 tells builds that predate zstd to keep out.
fn config_version(compression: Compression) -> u32 {
    if compression.is_lz4() {
        1
    } else {
        2
    }
}

/// The library configuration file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LibraryConfig {
    /// Always `ferry-library`.
    pub format: String,
    /// Layout version: 1, or 2 when `compression` is zstd.
    pub version: u32,
    /// Parameters every capture into this library uses, so that all images
    /// cut the same content at the same places and share chunks.
    pub chunker: ChunkerParams,
    /// How captures compress new chunks; absent (LZ4) in version 1.
    #[serde(default, skip_serializing_if = "Compression::is_lz4")]
    pub compression: Compression,
}

/// Checks the settings a library is created with.
fn check_settings(chunker: &ChunkerParams, compression: Compression) -> Result<(), String> {
    chunker.check()?;
    match compression {
        Compression::Zstd { level } if !Compression::ZSTD_LEVELS.contains(&level) => Err(format!(
            "zstd level {level} is outside {}..={}",
            Compression::ZSTD_LEVELS.start(),
            Compression::ZSTD_LEVELS.end()
        )),
        _ => Ok(()),
    }
}

/// Key of a pack.
pub fn pack_key(id: &ObjectId) -> String {
    let h = id.to_hex();
    format!("packs/{}/{h}.pack", &h[..2])
}

/// Key of an index file.
pub fn index_key(id: &ObjectId) -> String {
    format!("index/{}.idx", id.to_hex())
}

/// Key of a chunk list.
pub fn list_key(id: &ObjectId) -> String {
    let h = id.to_hex();
    format!("lists/{}/{h}.list", &h[..2])
}

/// Key of a manifest.
pub fn manifest_key(name: &str) -> String {
    format!("images/{name}.json")
}

/// The id in a content-addressed key (`…/<hex>.<ext>`).
pub fn id_of_key(key: &str) -> Option<ObjectId> {
    let file = key.rsplit('/').next()?;
    let stem = file.split('.').next()?;
    stem.parse().ok()
}

/// Checks an image name: 1–128 of `[A-Za-z0-9._-]`, not starting with `.`.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::BadName(name.chars().take(200).collect()))
    }
}

/// An open library.
pub struct Library {
    store: Box<dyn Store>,
    config: LibraryConfig,
}

impl Library {
    /// Opens the library in `store`.
    pub fn open(store: Box<dyn Store>) -> Result<Library> {
        let bytes = match store.get(CONFIG_KEY) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::NotALibrary {
                    path: store.location(),
                })
            }
            Err(e) => return Err(Error::io("reading", store.describe(CONFIG_KEY), e)),
        };
        let config: LibraryConfig = serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
            path: store.describe(CONFIG_KEY),
            reason: e.to_string(),
        })?;
        if config.format != CONFIG_FORMAT || ![1, 2].contains(&config.version) {
            return Err(Error::Corrupt {
                path: store.describe(CONFIG_KEY),
                reason: format!(
                    "format {:?} version {} is not a library this build reads ({CONFIG_FORMAT} 1 or 2)",
                    config.format, config.version
                ),
            });
        }
        if config.version != config_version(config.compression) {
            return Err(Error::Corrupt {
                path: store.describe(CONFIG_KEY),
                reason: format!(
                    "version {} does not go with compression {} (LZ4 libraries are version 1, zstd ones version 2)",
                    config.version, config.compression
                ),
            });
        }
        check_settings(&config.chunker, config.compression).map_err(|reason| Error::Config {
            library: store.location(),
            reason,
        })?;
        Ok(Library { store, config })
    }

    /// Creates a library in an empty store, compressing with LZ4.
    pub fn create(store: Box<dyn Store>, chunker: ChunkerParams) -> Result<Library> {
        Library::create_with(store, chunker, Compression::Lz4)
    }

    /// Creates a library in an empty store whose captures compress new
    /// chunks with `compression`.
    pub fn create_with(
        store: Box<dyn Store>,
        chunker: ChunkerParams,
        compression: Compression,
    ) -> Result<Library> {
        let (config, bytes) = new_config(store.as_ref(), chunker, compression)?;
        store
            .put(CONFIG_KEY, &bytes)
            .map_err(|e| Error::io("writing", store.describe(CONFIG_KEY), e))?;
        Ok(Library { store, config })
    }

    /// [`Library::create_with`] for a store that looked empty, unless another
    /// process created the library meanwhile: the configuration goes in only
    /// if absent, and a racing creator's library is opened instead.
    fn create_if_absent(
        store: Box<dyn Store>,
        chunker: ChunkerParams,
        compression: Compression,
    ) -> Result<Library> {
        let (config, bytes) = new_config(store.as_ref(), chunker, compression)?;
        match store.put_new(CONFIG_KEY, &bytes) {
            Ok(()) => Ok(Library { store, config }),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Library::open(store),
            Err(e) => Err(Error::io("writing", store.describe(CONFIG_KEY), e)),
        }
    }

    /// Opens the library in directory `path`.
    pub fn open_local(path: &Path) -> Result<Library> {
        if !path.exists() {
            return Err(Error::io(
                "opening library",
                path.display(),
                io::Error::new(io::ErrorKind::NotFound, "no such directory"),
            ));
        }
        Library::open(Box::new(LocalStore::new(path)))
    }

    /// Opens the library in `path`, creating it (with LZ4) if `path` is
    /// absent or an empty directory. A non-empty directory without a
    /// library is refused.
    pub fn open_or_create_local(path: &Path) -> Result<Library> {
        Library::open_or_create_local_with(path, None)
    }

    /// [`Library::open_or_create_local`], creating the library with
    /// `compression` (LZ4 if `None`). An existing library must already use
    /// `compression` when it is given: a library's compression is chosen
    /// once.
    pub fn open_or_create_local_with(
        path: &Path,
        compression: Option<Compression>,
    ) -> Result<Library> {
        // A racing creator's temp files (under tmp/) and lock do not make
        // the directory a non-library.
        let empty = match std::fs::read_dir(path) {
            Ok(rd) => rd.filter_map(|e| e.ok()).all(|e| {
                let name = e.file_name();
                name == "tmp" || name == "lock"
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => true,
            Err(e) => return Err(Error::io("opening library", path.display(), e)),
        };
        Library::open_or_create_with(Box::new(LocalStore::new(path)), empty, compression)
    }

    /// Opens the library in `store`, or creates it there (with
    /// `compression`, LZ4 if `None`) if the store holds no object at all:
    /// how a capture opens a network library.
    pub fn open_or_create_store(
        store: Box<dyn Store>,
        compression: Option<Compression>,
    ) -> Result<Library> {
        let empty = store
            .list("")
            .map_err(|e| Error::io("listing", store.location(), e))?
            .is_empty();
        Library::open_or_create_with(store, empty, compression)
    }

    fn open_or_create_with(
        store: Box<dyn Store>,
        empty: bool,
        compression: Option<Compression>,
    ) -> Result<Library> {
        let lib = if empty {
            Library::create_if_absent(
                store,
                ChunkerParams::default(),
                compression.unwrap_or_default(),
            )?
        } else {
            Library::open(store)?
        };
        match compression {
            Some(c) if c != lib.compression() => Err(Error::Config {
                library: lib.location(),
                reason: format!(
                    "it compresses new chunks with {}, not {c}: a library's compression is chosen when it is created",
                    lib.compression()
                ),
            }),
            _ => Ok(lib),
        }
    }

    /// Where the library is.
    pub fn location(&self) -> String {
        self.store.location()
    }

    /// The backing store.
    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// The chunking parameters for captures.
    pub fn chunker(&self) -> &ChunkerParams {
        &self.config.chunker
    }

    /// How captures into this library compress new chunks.
    pub fn compression(&self) -> Compression {
        self.config.compression
    }

    /// Takes the library lock, waiting (with a log line) if it is busy.
    pub fn lock(&self, mode: LockMode) -> Result<LockGuard> {
        let wanted = match mode {
            LockMode::Shared => "shared",
            LockMode::Exclusive => "exclusive",
        };
        match self.store.lock(mode, false) {
            Ok(g) => Ok(g),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                tracing::info!(
                    "library {} is busy; waiting for a {wanted} lock",
                    self.location()
                );
                self.store
                    .lock(mode, true)
                    .map_err(|e| Error::io("locking", self.location(), e))
            }
            Err(e) => Err(Error::io("locking", self.location(), e)),
        }
    }

    /// Starts a capture of image `name`: checks the name, takes the shared
    /// lock (returned; hold it until the manifest is written), and refuses a
    /// taken name or a missing parent.
    pub fn begin_capture(&self, name: &str, parent: Option<&str>) -> Result<LockGuard> {
        check_name(name)?;
        let lock = self.lock(LockMode::Shared)?;
        if self.has_image(name)? {
            return Err(Error::ImageExists {
                name: name.into(),
                library: self.location(),
            });
        }
        if let Some(parent) = parent {
            self.manifest(parent)?;
        }
        Ok(lock)
    }

    /// Takes the lock without waiting.
    pub fn try_lock(&self, mode: LockMode) -> Result<LockGuard> {
        self.store.lock(mode, false).map_err(|e| {
            if e.kind() == io::ErrorKind::WouldBlock {
                Error::Locked {
                    library: self.location(),
                    wanted: if mode == LockMode::Shared {
                        "shared"
                    } else {
                        "exclusive"
                    },
                }
            } else {
                Error::io("locking", self.location(), e)
            }
        })
    }

    /// Reads a content-addressed object and checks it hashes to its name.
    fn get_verified(&self, key: &str, id: &ObjectId) -> Result<Vec<u8>> {
        let bytes = self
            .store
            .get(key)
            .map_err(|e| Error::io("reading", self.store.describe(key), e))?;
        let actual = ChunkId::of(&bytes);
        if actual != *id {
            return Err(Error::Corrupt {
                path: self.store.describe(key),
                reason: format!(
                    "its {} bytes hash to {}, not to its name (truncated or altered)",
                    bytes.len(),
                    actual.short()
                ),
            });
        }
        Ok(bytes)
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        self.store
            .put(key, data)
            .map_err(|e| Error::io("writing", self.store.describe(key), e))
    }

    /// The ids of all index files.
    pub fn index_files(&self) -> Result<Vec<ObjectId>> {
        let list = self
            .store
            .list("index/")
            .map_err(|e| Error::io("listing", self.store.describe("index"), e))?;
        Ok(list
            .iter()
            .filter(|o| o.key.ends_with(".idx"))
            .filter_map(|o| {
                let id = id_of_key(&o.key);
                if id.is_none() {
                    tracing::warn!("ignoring stray file {}", self.store.describe(&o.key));
                }
                id
            })
            .collect())
    }

    /// Reads and checks one index file.
    pub fn read_index_file(&self, id: &ObjectId) -> Result<Index> {
        let key = index_key(id);
        let bytes = self.get_verified(&key, id)?;
        Index::decode(&bytes).map_err(|e| Error::Corrupt {
            path: self.store.describe(&key),
            reason: e.to_string(),
        })
    }

    /// Loads the whole index: the union of all index files.
    pub fn load_index(&self) -> Result<Index> {
        let mut index = Index::new();
        for id in self.index_files()? {
            index.merge(&self.read_index_file(&id)?);
        }
        Ok(index)
    }

    /// Stores a finished pack.
    pub fn write_pack(&self, id: &ObjectId, bytes: &[u8]) -> Result<()> {
        self.put(&pack_key(id), bytes)
    }

    /// [`Library::write_pack`] in two steps ([`Store::put_started`]): the
    /// pack exists once the returned [`PendingPack`] is finished.
    pub fn start_pack(&self, id: &ObjectId, bytes: &[u8]) -> Result<PendingPack> {
        let key = pack_key(id);
        let put = self
            .store
            .put_started(&key, bytes)
            .map_err(|e| Error::io("writing", self.store.describe(&key), e))?;
        Ok(PendingPack {
            put,
            shown: self.store.describe(&key),
        })
    }

    /// Stores an index file; returns its id.
    pub fn write_index(&self, index: &Index) -> Result<ObjectId> {
        let bytes = index.encode();
        let id = ChunkId::of(&bytes);
        self.put(&index_key(&id), &bytes)?;
        Ok(id)
    }

    /// Stores a chunk list; returns its id.
    pub fn write_list(&self, list: &ChunkList) -> Result<ObjectId> {
        let bytes = list.encode();
        let id = ChunkId::of(&bytes);
        self.put(&list_key(&id), &bytes)?;
        Ok(id)
    }

    /// Reads and checks a chunk list.
    pub fn read_list(&self, id: &ObjectId) -> Result<ChunkList> {
        let key = list_key(id);
        let bytes = self.get_verified(&key, id)?;
        ChunkList::decode(&bytes).map_err(|e| Error::Corrupt {
            path: self.store.describe(&key),
            reason: e.to_string(),
        })
    }

    /// Names of all images, sorted.
    pub fn image_names(&self) -> Result<Vec<String>> {
        let list = self
            .store
            .list("images/")
            .map_err(|e| Error::io("listing", self.store.describe("images"), e))?;
        Ok(list
            .iter()
            .filter_map(|o| o.key.strip_prefix("images/")?.strip_suffix(".json"))
            .filter(|n| check_name(n).is_ok())
            .map(str::to_string)
            .collect())
    }

    /// True if an image of that name exists.
    pub fn has_image(&self, name: &str) -> Result<bool> {
        Ok(self.image_names()?.iter().any(|n| n == name))
    }

    /// Reads an image's manifest.
    pub fn manifest(&self, name: &str) -> Result<Manifest> {
        check_name(name)?;
        let key = manifest_key(name);
        let bytes = match self.store.get(&key) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::NoSuchImage {
                    name: name.into(),
                    library: self.location(),
                })
            }
            Err(e) => return Err(Error::io("reading", self.store.describe(&key), e)),
        };
        let m = Manifest::decode(&bytes).map_err(|reason| Error::Corrupt {
            path: self.store.describe(&key),
            reason,
        })?;
        if m.name != name {
            return Err(Error::Corrupt {
                path: self.store.describe(&key),
                reason: format!("it names itself {:?}", m.name),
            });
        }
        Ok(m)
    }

    /// Stores a manifest: the last write of a capture.
    pub fn write_manifest(&self, m: &Manifest) -> Result<()> {
        check_name(&m.name)?;
        self.put(&manifest_key(&m.name), &m.encode())
    }

    /// Removes an image's manifest. Its data goes at the next `gc`.
    pub fn remove_image(&self, name: &str) -> Result<()> {
        check_name(name)?;
        if !self.has_image(name)? {
            return Err(Error::NoSuchImage {
                name: name.into(),
                library: self.location(),
            });
        }
        let key = manifest_key(name);
        self.store
            .delete(&key)
            .map_err(|e| Error::io("removing", self.store.describe(&key), e))
    }

    /// Reads `len` bytes of pack `pack` at `offset` into `buf`.
    pub fn read_pack_range(&self, pack: &ObjectId, offset: u64, buf: &mut [u8]) -> Result<()> {
        let key = pack_key(pack);
        self.store
            .read_at(&key, offset, buf)
            .map_err(|e| Error::io("reading", self.store.describe(&key), e))
    }

    /// Checks the record `record` (read from `loc`) and decodes the chunk.
    pub fn verify_record(
        &self,
        index: &Index,
        loc: &Location,
        record: &[u8],
        buf: Vec<u8>,
    ) -> Result<VerifiedChunk> {
        let pack = index.pack_id(loc.pack);
        let bad = |fault| Error::BadChunk {
            id: loc.entry.id,
            pack: self.store.describe(&pack_key(&pack)),
            offset: u64::from(loc.entry.offset),
            fault,
        };
        let stored = parse_record(record, &loc.entry).map_err(|e| Error::Corrupt {
            path: format!(
                "{} (offset {})",
                self.store.describe(&pack_key(&pack)),
                loc.entry.offset
            ),
            reason: e.to_string(),
        })?;
        stored.verify_into(buf).map_err(bad)
    }

    /// Fetches and verifies one chunk.
    pub fn read_chunk(&self, index: &Index, loc: &Location) -> Result<VerifiedChunk> {
        let mut record = vec![0u8; loc.entry.record_len()];
        self.read_pack_range(
            &index.pack_id(loc.pack),
            u64::from(loc.entry.offset),
            &mut record,
        )?;
        self.verify_record(index, loc, &record, Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "web01-2026.11_23", &"x".repeat(128)] {
            check_name(ok).expect(ok);
        }
        for bad in ["", ".hidden", "a/b", "../x", "a b", &"x".repeat(129), "é"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_directory_with_other_files_is_not_a_library() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("notes.txt"), "x").expect("write");
        let err = Library::open_or_create_local(dir.path())
            .err()
            .expect("refused");
        assert!(matches!(err, Error::NotALibrary { .. }), "{err}");
        let lib = Library::open_or_create_local(&dir.path().join("new")).expect("created");
        assert_eq!(lib.chunker(), &ChunkerParams::default());
        Library::open_local(&dir.path().join("new")).expect("reopens");
    }

    /// Two processes of a direct migration open a new library at once: a
    /// creator's temp file must not make the other refuse the directory,
    /// and both end with the same library.
    #[test]
    fn racing_creators_all_open_the_library() {
        for round in 0..20 {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("lib");
            // A creator caught between its temp file and its rename.
            if round % 2 == 1 {
                std::fs::create_dir_all(path.join("tmp")).expect("tmp");
                std::fs::write(path.join("tmp/1.0.tmp"), "{").expect("temp");
            }
            let libs: Vec<_> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..8)
                    .map(|_| s.spawn(|| Library::open_or_create_local(&path)))
                    .collect();
                hs.into_iter().map(|h| h.join().expect("thread")).collect()
            });
            for lib in libs {
                let lib = lib.expect("opened or created");
                assert_eq!(lib.chunker(), &ChunkerParams::default());
            }
            Library::open_local(&path).expect("reopens");
        }
    }
}
