//! Where a library's objects live.
//!
//! [`Store`] is a flat key → bytes map with atomic puts, ranged reads and a
//! library-wide lock. Keys are `/`-separated relative paths such as
//! `packs/ab/ab….pack`. [`LocalStore`] is the embedded default, a directory;
//! the S3 and HTTPS backends (issue 7) implement the same trait over
//! `object_store`. The trait is synchronous: the capture and restore pipelines
//! run on threads, and a network backend drives its own runtime inside.
//!
//! Atomicity contract: after `put` returns, the object is durable and
//! complete; a crash during `put` leaves either no object or the whole one,
//! never a partial one. [`LocalStore`] writes a temp file under `tmp/`,
//! fsyncs it, renames it into place and fsyncs the directory.
//! [`Store::put_started`] splits a put in two, so that a writer of many
//! objects (packs) overlaps one object's flush with writing the next; the
//! object appears only once it is durable, as with `put`.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use nix::fcntl::{Flock, FlockArg};

/// An object's key and size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Its key.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
}

/// Shared (capture, restore, verify) or exclusive (gc, rm) access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    /// Many holders at once.
    Shared,
    /// One holder, no shared holders.
    Exclusive,
}

/// Held while a lock is held; dropping it releases the lock.
pub type LockGuard = Box<dyn Send>;

/// A library's backing storage.
pub trait Store: Send + Sync {
    /// Human-readable location, for messages (a path or URL).
    fn location(&self) -> String;
    /// The path or URL of one object, for messages.
    fn describe(&self, key: &str) -> String;
    /// The whole object. `ErrorKind::NotFound` if absent.
    fn get(&self, key: &str) -> io::Result<Vec<u8>>;
    /// Exactly `buf.len()` bytes at `offset`.
    fn read_at(&self, key: &str, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes an object atomically and durably (see the module docs).
    fn put(&self, key: &str, data: &[u8]) -> io::Result<()>;
    /// Every object whose key starts with `prefix`, in key order.
    fn list(&self, prefix: &str) -> io::Result<Vec<ObjectInfo>>;
    /// Removes an object; absent objects are not an error.
    fn delete(&self, key: &str) -> io::Result<()>;
    /// Takes the library lock, waiting for it if `wait`.
    fn lock(&self, mode: LockMode, wait: bool) -> io::Result<LockGuard>;
    /// Removes leftovers of interrupted writes (temp files). Only called
    /// under the exclusive lock.
    fn clean_temp(&self) -> io::Result<u64>;

    /// [`Store::put`] in two steps: the data is written now, and the object
    /// appears, durable, when the returned [`PendingPut`] is finished. A
    /// writer of many objects finishes each one after starting the next, so
    /// one object's flush to the disk overlaps the next one's writing. A
    /// `PendingPut` dropped unfinished leaves no object. The default puts at
    /// once.
    fn put_started(&self, key: &str, data: &[u8]) -> io::Result<PendingPut> {
        self.put(key, data)?;
        Ok(PendingPut(None))
    }

    /// [`Store::put`], but only if `key` is absent: `ErrorKind::AlreadyExists`
    /// otherwise. The default checks, then puts (not atomic against a racing
    /// writer); stores that can do better (`O_EXCL`-style links, S3's
    /// `If-None-Match`) override it.
    fn put_new(&self, key: &str, data: &[u8]) -> io::Result<()> {
        match self.size(key) {
            Ok(_) => Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} already exists", self.describe(key)),
            )),
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.put(key, data),
            Err(e) => Err(e),
        }
    }

    /// The size of one object. `ErrorKind::NotFound` if absent.
    fn size(&self, key: &str) -> io::Result<u64> {
        self.list(key)?
            .into_iter()
            .find(|o| o.key == key)
            .map(|o| o.size)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{} not found", self.describe(key)),
                )
            })
    }

    /// True if reads are worth issuing concurrently (network stores, where
    /// one request's round trip leaves the link idle); false for local
    /// stores, whose reads the restore pipeline keeps on its planner thread.
    fn parallel_reads(&self) -> bool {
        false
    }
}

/// A put begun by [`Store::put_started`]: [`PendingPut::finish`] makes the
/// object exist.
pub struct PendingPut(Option<TempObject>);

impl PendingPut {
    /// Waits until the data is durable, then puts the object in place.
    pub fn finish(mut self) -> io::Result<()> {
        match self.0.take() {
            Some(t) => t.place(),
            None => Ok(()),
        }
    }
}

/// A [`LocalStore`] object written to its temp file, not yet in place. The
/// temp file is removed unless placed.
struct TempObject {
    file: File,
    tmp: PathBuf,
    dest: PathBuf,
    how: Placement,
}

impl TempObject {
    /// fsyncs the temp file, puts it at its destination and fsyncs the
    /// directory.
    fn place(self) -> io::Result<()> {
        self.file.sync_all()?;
        let parent = self.dest.parent().expect("keys have a directory");
        create_dirs(parent)?;
        match self.how {
            Placement::Replace => fs::rename(&self.tmp, &self.dest)?,
            Placement::CreateNew => fs::hard_link(&self.tmp, &self.dest)?,
        }
        sync_dir(parent)
    }
}

impl Drop for TempObject {
    fn drop(&mut self) {
        // After a rename the temp name is gone already; after a link, or a
        // failure, it is removed here.
        let _ = fs::remove_file(&self.tmp);
    }
}

/// How many pack files a [`LocalStore`] keeps open for ranged reads.
const OPEN_FILES: usize = 64;

/// A library in a local directory.
pub struct LocalStore {
    root: PathBuf,
    open: Mutex<HashMap<String, Arc<File>>>,
}

/// Numbers temp files apart within this process: across every
/// [`LocalStore`], since two of them may share a directory.
static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

impl LocalStore {
    /// A store rooted at `root` (which need not exist yet).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalStore {
            root: root.into(),
            open: Mutex::new(HashMap::new()),
        }
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> PathBuf {
        debug_assert!(
            !key.starts_with('/') && !key.contains(".."),
            "bad key {key}"
        );
        self.root.join(key)
    }

    fn handle(&self, key: &str) -> io::Result<Arc<File>> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = open.get(key) {
            return Ok(f.clone());
        }
        let f = Arc::new(File::open(self.path(key))?);
        if open.len() >= OPEN_FILES {
            open.clear();
        }
        open.insert(key.to_string(), f.clone());
        Ok(f)
    }
}

/// How [`LocalStore::write_into_place`] puts a finished temp file in place.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// rename(2): replaces an existing object.
    Replace,
    /// link(2): fails with `AlreadyExists` if the object exists.
    CreateNew,
}

impl LocalStore {
    /// Writes `data` to a temp file under `tmp/`, fsyncs it, puts it at
    /// `key` and fsyncs the directory; the temp file never outlives it.
    fn write_into_place(&self, key: &str, data: &[u8], how: Placement) -> io::Result<()> {
        self.write_temp(key, data, how)?.place()
    }

    /// The first half of [`LocalStore::write_into_place`]: `data` in a temp
    /// file.
    fn write_temp(&self, key: &str, data: &[u8], how: Placement) -> io::Result<TempObject> {
        let dest = self.path(key);
        let tmp_dir = self.root.join("tmp");
        create_dirs(&tmp_dir)?;
        let n = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
        let tmp = tmp_dir.join(format!("{}.{n}.tmp", std::process::id()));
        let file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        let mut t = TempObject {
            file,
            tmp,
            dest,
            how,
        };
        t.file.write_all(data)?;
        Ok(t)
    }
}

/// fsyncs a directory, so a rename or create inside it is durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` and any missing parents, syncing each parent it changed.
fn create_dirs(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dirs(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

impl Store for LocalStore {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn describe(&self, key: &str) -> String {
        self.path(key).display().to_string()
    }

    fn get(&self, key: &str) -> io::Result<Vec<u8>> {
        fs::read(self.path(key))
    }

    fn read_at(&self, key: &str, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.handle(key)?.read_exact_at(buf, offset)
    }

    fn put(&self, key: &str, data: &[u8]) -> io::Result<()> {
        self.write_into_place(key, data, Placement::Replace)
    }

    fn put_started(&self, key: &str, data: &[u8]) -> io::Result<PendingPut> {
        let t = self.write_temp(key, data, Placement::Replace)?;
        crate::device::start_writeback(&t.file, 0, 0);
        Ok(PendingPut(Some(t)))
    }

    fn list(&self, prefix: &str) -> io::Result<Vec<ObjectInfo>> {
        // The directory part of the prefix bounds the walk.
        let dir_part = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        let mut out = Vec::new();
        let mut stack = vec![self.root.join(dir_part)];
        while let Some(dir) = stack.pop() {
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for ent in rd {
                let ent = ent?;
                let ty = ent.file_type()?;
                let path = ent.path();
                let Ok(rel) = path.strip_prefix(&self.root) else {
                    continue;
                };
                let key = rel.to_string_lossy().replace('\\', "/");
                if key == "lock" || (key == "tmp" && !prefix.starts_with("tmp")) {
                    continue;
                }
                if ty.is_dir() {
                    if prefix.starts_with(&format!("{key}/"))
                        || key.starts_with(prefix)
                        || prefix.is_empty()
                    {
                        stack.push(path);
                    }
                } else if ty.is_file() && key.starts_with(prefix) {
                    out.push(ObjectInfo {
                        key,
                        size: ent.metadata()?.len(),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn delete(&self, key: &str) -> io::Result<()> {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        match fs::remove_file(self.path(key)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn lock(&self, mode: LockMode, wait: bool) -> io::Result<LockGuard> {
        create_dirs(&self.root)?;
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.root.join("lock"))?;
        let arg = match (mode, wait) {
            (LockMode::Shared, true) => FlockArg::LockShared,
            (LockMode::Shared, false) => FlockArg::LockSharedNonblock,
            (LockMode::Exclusive, true) => FlockArg::LockExclusive,
            (LockMode::Exclusive, false) => FlockArg::LockExclusiveNonblock,
        };
        match Flock::lock(f, arg) {
            Ok(guard) => Ok(Box::new(guard)),
            Err((_, errno)) => Err(io::Error::from(errno)),
        }
    }

    fn size(&self, key: &str) -> io::Result<u64> {
        let md = fs::metadata(self.path(key))?;
        if md.is_file() {
            Ok(md.len())
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} is not a file", self.describe(key)),
            ))
        }
    }

    fn put_new(&self, key: &str, data: &[u8]) -> io::Result<()> {
        // link(2) fails if the name exists, so two racing creators cannot
        // both win.
        self.write_into_place(key, data, Placement::CreateNew)
    }

    fn clean_temp(&self) -> io::Result<u64> {
        let mut n = 0;
        let dir = self.root.join("tmp");
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        for ent in rd {
            fs::remove_file(ent?.path())?;
            n += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_list_delete() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = LocalStore::new(dir.path().join("lib"));
        s.put("packs/ab/abc.pack", b"hello").expect("put");
        s.put("index/1.idx", b"i").expect("put");
        s.put("images/a.json", b"{}").expect("put");
        assert_eq!(s.get("packs/ab/abc.pack").expect("get"), b"hello");
        let mut buf = [0u8; 3];
        s.read_at("packs/ab/abc.pack", 1, &mut buf)
            .expect("read_at");
        assert_eq!(&buf, b"ell");
        let keys: Vec<String> = s
            .list("packs/")
            .expect("list")
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(keys, ["packs/ab/abc.pack"]);
        assert_eq!(s.list("").expect("list").len(), 3);
        s.delete("packs/ab/abc.pack").expect("delete");
        s.delete("packs/ab/abc.pack").expect("delete is idempotent");
        assert!(s.list("packs/").expect("list").is_empty());
        assert_eq!(s.clean_temp().expect("clean"), 0);
        s.put_new("images/b.json", b"1").expect("created");
        let err = s.put_new("images/b.json", b"2").expect_err("exists");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(s.get("images/b.json").expect("get"), b"1");
        assert_eq!(s.size("images/b.json").expect("size"), 1);
        assert_eq!(
            s.size("images/none.json").expect_err("absent").kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn exclusive_lock_excludes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = LocalStore::new(dir.path());
        let shared = s.lock(LockMode::Shared, false).expect("shared");
        let shared2 = s.lock(LockMode::Shared, false).expect("second shared");
        assert!(s.lock(LockMode::Exclusive, false).is_err());
        drop((shared, shared2));
        let _ex = s.lock(LockMode::Exclusive, false).expect("exclusive");
        assert!(s.lock(LockMode::Shared, false).is_err());
    }

    /// A started put shows nothing until it is finished, and one dropped
    /// unfinished leaves neither the object nor its temp file.
    #[test]
    fn a_started_put_appears_only_when_finished() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = LocalStore::new(dir.path().join("lib"));
        let kept = s.put_started("packs/aa/a.pack", b"first").expect("start");
        let dropped = s.put_started("packs/bb/b.pack", b"second").expect("start");
        assert!(s.list("packs/").expect("list").is_empty(), "not yet");
        kept.finish().expect("finish");
        drop(dropped);
        let keys: Vec<String> = s
            .list("")
            .expect("list")
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(keys, ["packs/aa/a.pack"]);
        assert_eq!(s.get("packs/aa/a.pack").expect("get"), b"first");
        let temps = fs::read_dir(dir.path().join("lib/tmp"))
            .expect("tmp")
            .count();
        assert_eq!(temps, 0, "no temp file is left");
    }
}
