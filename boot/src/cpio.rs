//! A deterministic newc ("070701") cpio writer, the format the kernel
//! unpacks an initramfs from.
//!
//! An [`Archive`] collects entries by path and writes them sorted, each
//! parent directory before its children (added implicitly, mode 0755), with
//! uid/gid 0, mtime 0 and inode numbers counted from 1 in that order, so the
//! same inputs always give the same bytes. Supported entries: regular files,
//! directories, symbolic links and character devices (for `/dev/console`
//! and `/dev/null`, which the kernel needs before devtmpfs is mounted).
//! Hard links are not written (each file is its own inode). Paths are
//! relative (`bin/busybox`); a leading `/` is dropped.

use std::collections::BTreeMap;
use std::io::{self, Write};

/// What an entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A regular file with these contents.
    File(Vec<u8>),
    /// A directory.
    Dir,
    /// A symbolic link to this target.
    Symlink(String),
    /// A character device `major:minor`.
    CharDev(u32, u32),
}

/// One archive member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its kind and contents.
    pub kind: Kind,
    /// Permission bits (`0o755`); the type bits come from `kind`.
    pub mode: u32,
}

/// An archive being assembled (see the module documentation).
#[derive(Clone, Debug, Default)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

fn clean(path: &str) -> String {
    path.trim_start_matches('/')
        .trim_end_matches('/')
        .to_string()
}

impl Archive {
    /// An empty archive.
    pub fn new() -> Archive {
        Archive::default()
    }

    /// Adds (or replaces) `path`, creating its parent directories.
    pub fn insert(&mut self, path: &str, entry: Entry) {
        let path = clean(path);
        let mut parent = String::new();
        for part in path
            .split('/')
            .rev()
            .skip(1)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            self.entries.entry(parent.clone()).or_insert(Entry {
                kind: Kind::Dir,
                mode: 0o755,
            });
        }
        if !path.is_empty() {
            self.entries.insert(path, entry);
        }
    }

    /// Adds a regular file.
    pub fn file(&mut self, path: &str, data: Vec<u8>, mode: u32) {
        self.insert(
            path,
            Entry {
                kind: Kind::File(data),
                mode,
            },
        );
    }

    /// Adds a directory.
    pub fn dir(&mut self, path: &str, mode: u32) {
        self.insert(
            path,
            Entry {
                kind: Kind::Dir,
                mode,
            },
        );
    }

    /// Adds a symbolic link `path` → `target`.
    pub fn symlink(&mut self, path: &str, target: &str) {
        self.insert(
            path,
            Entry {
                kind: Kind::Symlink(target.to_string()),
                mode: 0o777,
            },
        );
    }

    /// Adds a character device.
    pub fn char_dev(&mut self, path: &str, major: u32, minor: u32, mode: u32) {
        self.insert(
            path,
            Entry {
                kind: Kind::CharDev(major, minor),
                mode,
            },
        );
    }

    /// Whether `path` is in the archive.
    pub fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(&clean(path))
    }

    /// The entry at `path`.
    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries.get(&clean(path))
    }

    /// The paths, in archive order.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// The bytes of file contents in the archive.
    pub fn content_bytes(&self) -> u64 {
        self.entries
            .values()
            .map(|e| match &e.kind {
                Kind::File(d) => d.len() as u64,
                _ => 0,
            })
            .sum()
    }

    /// Writes the archive, ending with the `TRAILER!!!` record.
    pub fn write(&self, out: &mut impl Write) -> io::Result<u64> {
        let mut w = Counting { inner: out, n: 0 };
        for (ino, (path, entry)) in self.entries.iter().enumerate() {
            let (type_bits, data, rdev, nlink): (u32, &[u8], (u32, u32), u32) = match &entry.kind {
                Kind::File(d) => (0o100000, d, (0, 0), 1),
                Kind::Dir => (0o040000, &[], (0, 0), 2),
                Kind::Symlink(t) => (0o120000, t.as_bytes(), (0, 0), 1),
                Kind::CharDev(ma, mi) => (0o020000, &[], (*ma, *mi), 1),
            };
            header(
                &mut w,
                path,
                ino as u32 + 1,
                type_bits | (entry.mode & 0o7777),
                nlink,
                data.len(),
                rdev,
            )?;
            w.write_all(data)?;
            pad(&mut w)?;
        }
        header(&mut w, "TRAILER!!!", 0, 0, 1, 0, (0, 0))?;
        Ok(w.n)
    }
}

struct Counting<'a, W: Write> {
    inner: &'a mut W,
    n: u64,
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn pad<W: Write>(w: &mut Counting<'_, W>) -> io::Result<()> {
    let rem = (4 - (w.n % 4) as usize) % 4;
    w.write_all(&[0u8; 3][..rem])
}

fn header<W: Write>(
    w: &mut Counting<'_, W>,
    name: &str,
    ino: u32,
    mode: u32,
    nlink: u32,
    size: usize,
    rdev: (u32, u32),
) -> io::Result<()> {
    let size = u32::try_from(size).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name}: {size} bytes do not fit a newc cpio entry (4 GiB)"),
        )
    })?;
    write!(
        w,
        "070701{ino:08x}{mode:08x}{uid:08x}{gid:08x}{nlink:08x}{mtime:08x}{size:08x}\
         {dmaj:08x}{dmin:08x}{rmaj:08x}{rmin:08x}{namesize:08x}{check:08x}",
        uid = 0,
        gid = 0,
        mtime = 0,
        dmaj = 0,
        dmin = 0,
        rmaj = rdev.0,
        rmin = rdev.1,
        namesize = name.len() + 1,
        check = 0,
    )?;
    w.write_all(name.as_bytes())?;
    w.write_all(&[0])?;
    pad(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_sorted_padded_and_deterministic() {
        let mut a = Archive::new();
        a.file("/bin/x", b"hello".to_vec(), 0o755);
        a.symlink("bin/sh", "busybox");
        a.char_dev("dev/console", 5, 1, 0o600);
        let mut out = Vec::new();
        let n = a.write(&mut out).expect("in memory");
        assert_eq!(n as usize, out.len());
        assert_eq!(out.len() % 4, 0);
        let mut again = Vec::new();
        a.clone().write(&mut again).expect("in memory");
        assert_eq!(out, again);
        let names: Vec<&str> = a.paths().collect();
        assert_eq!(names, ["bin", "bin/sh", "bin/x", "dev", "dev/console"]);
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("070701"));
        assert!(text.contains("TRAILER!!!"));
    }

    /// The system's cpio(1) reads what we write, with the same types.
    #[test]
    fn cpio_tool_lists_it() {
        if std::process::Command::new("cpio")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("SKIP: cpio(1) is not installed");
            return;
        }
        let mut a = Archive::new();
        a.file("init", b"#!/bin/sh\n".to_vec(), 0o755);
        a.symlink("bin/sh", "busybox");
        a.dir("proc", 0o555);
        a.char_dev("dev/null", 1, 3, 0o666);
        let mut out = Vec::new();
        a.write(&mut out).expect("in memory");
        let mut child = std::process::Command::new("cpio")
            .args(["-t", "-v", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("cpio runs");
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(&out)
            .expect("write");
        let listing = child.wait_with_output().expect("cpio output");
        let text = String::from_utf8_lossy(&listing.stdout);
        assert!(listing.status.success(), "{text}");
        assert!(text.contains("bin/sh -> busybox"), "{text}");
        assert!(
            text.lines()
                .any(|l| l.starts_with("crw-rw-rw-") && l.contains("dev/null")),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with("-rwxr-xr-x") && l.ends_with("init")),
            "{text}"
        );
    }
}
