//! A mailbox in a local directory: for tests, for an agent whose mailbox
//! is on a mounted share, and as `ferry serve`'s own storage of mailboxes.
//!
//! `replace` writes a temp file, fsyncs it and renames it over the old one.
//! `create` writes a temp file, fsyncs it and hard-links it to its name:
//! link(2) fails if the name exists, so two writers can never both create
//! the same message, and a reader never sees a partial file.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::{fill_random, hex_lower, Transport};

/// Temp files start with this; [`Transport::list`] never shows them.
const TEMP_PREFIX: &str = ".tmp-";

/// A mailbox directory.
pub struct LocalTransport {
    dir: PathBuf,
}

impl LocalTransport {
    /// The mailbox in `dir`, created on first write.
    pub fn new(dir: impl Into<PathBuf>) -> LocalTransport {
        LocalTransport { dir: dir.into() }
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> io::Result<PathBuf> {
        super::check_file_name(name)?;
        Ok(self.dir.join(name))
    }

    fn write_temp(&self, data: &[u8]) -> io::Result<PathBuf> {
        fs::create_dir_all(&self.dir)?;
        let mut r = [0u8; 8];
        fill_random(&mut r)?;
        let tmp = self.dir.join(format!("{TEMP_PREFIX}{}", hex_lower(&r)));
        let mut f = File::options().write(true).create_new(true).open(&tmp)?;
        let res = f.write_all(data).and_then(|()| f.sync_all());
        if let Err(e) = res {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(tmp)
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }
}

impl Transport for LocalTransport {
    fn describe(&self) -> String {
        self.dir.display().to_string()
    }

    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        match fs::read(self.path(name)?) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn replace(&self, name: &str, data: &[u8]) -> io::Result<()> {
        let path = self.path(name)?;
        let tmp = self.write_temp(data)?;
        if let Err(e) = fs::rename(&tmp, &path) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        self.sync_dir()
    }

    fn create(&self, name: &str, data: &[u8]) -> io::Result<bool> {
        let path = self.path(name)?;
        let tmp = self.write_temp(data)?;
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                self.sync_dir()?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn list(&self) -> io::Result<Vec<String>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut names = Vec::new();
        for e in entries {
            let e = e?;
            if let Some(n) = e.file_name().to_str() {
                if !n.starts_with('.') && e.file_type()?.is_file() {
                    names.push(n.to_string());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    fn delete(&self, name: &str) -> io::Result<()> {
        match fs::remove_file(self.path(name)?) {
            Ok(()) => self.sync_dir(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_paths() {
        let d = tempfile::tempdir().expect("tempdir");
        let t = LocalTransport::new(d.path());
        for bad in ["../x", "a/b", ".tmp-1", "", "/etc/passwd"] {
            assert!(t.read(bad).is_err(), "{bad:?}");
            assert!(t.create(bad, b"x").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn create_is_write_once_and_replace_is_atomic() {
        let d = tempfile::tempdir().expect("tempdir");
        let t = LocalTransport::new(d.path().join("m"));
        assert_eq!(t.read("a.json").expect("read"), None);
        assert!(t.create("a.json", b"1").expect("create"));
        assert!(!t.create("a.json", b"2").expect("create"));
        assert_eq!(t.read("a.json").expect("read").as_deref(), Some(&b"1"[..]));
        t.replace("s.json", b"x").expect("replace");
        t.replace("s.json", b"y").expect("replace");
        assert_eq!(t.read("s.json").expect("read").as_deref(), Some(&b"y"[..]));
        assert_eq!(t.list().expect("list"), ["a.json", "s.json"]);
        t.delete("a.json").expect("delete");
        t.delete("a.json").expect("delete again");
        assert_eq!(t.list().expect("list"), ["s.json"]);
    }
}
