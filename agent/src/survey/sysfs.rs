//! Reading sysfs under a root: attributes, links and device paths.
//!
//! Every read goes through a path that [`Sysfs::real`] has resolved and
//! checked to lie inside ROOT/sys, so a fixture tree is never escaped by a
//! stray absolute link. A missing, unreadable or empty attribute is `None`.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::SurveyError;

/// The sysfs tree of a root (`/sys`, or `<fixture>/sys` in tests).
pub(crate) struct Sysfs {
    /// ROOT/sys with every symlink resolved.
    sys: PathBuf,
}

impl Sysfs {
    /// Opens ROOT/sys; the one survey failure is its absence.
    pub(crate) fn open(root: &Path) -> Result<Sysfs, SurveyError> {
        let path = root.join("sys");
        let no_sysfs = |source| SurveyError::NoSysfs {
            path: path.clone(),
            source,
        };
        let sys = std::fs::canonicalize(&path).map_err(no_sysfs)?;
        if !sys.is_dir() {
            return Err(no_sysfs(std::io::Error::from(
                std::io::ErrorKind::NotADirectory,
            )));
        }
        Ok(Sysfs { sys })
    }

    /// ROOT/sys/`rel`.
    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.sys.join(rel)
    }

    /// The entries of a directory, sorted by name; none when unreadable.
    pub(crate) fn children(&self, dir: &Path) -> Vec<(String, PathBuf)> {
        let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .collect();
        out.sort();
        out
    }

    /// `path` with every symlink resolved, when it exists and stays inside
    /// ROOT/sys.
    pub(crate) fn real(&self, path: &Path) -> Option<PathBuf> {
        std::fs::canonicalize(path)
            .ok()
            .filter(|p| p.starts_with(&self.sys))
    }

    /// A resolved path as the machine names it: `/sys/devices/…`.
    pub(crate) fn display(&self, real: &Path) -> Option<String> {
        let rel = real.strip_prefix(&self.sys).ok()?;
        Some(Path::new("/sys").join(rel).to_string_lossy().into_owned())
    }

    /// The name of the driver bound to the device at `real`: the last
    /// component of its `driver` link.
    pub(crate) fn driver(&self, real: &Path) -> Option<String> {
        link_name(&real.join("driver"))
    }

    /// The drivers bound to the device at `real` and to each device above
    /// it, nearest first (`["sd", "ata_piix"]`).
    pub(crate) fn driver_stack(&self, real: &Path) -> Vec<String> {
        real.ancestors()
            .take_while(|d| d.starts_with(&self.sys) && *d != self.sys)
            .filter_map(|d| self.driver(d))
            .collect()
    }
}

/// A sysfs attribute, trimmed of whitespace and NULs; `None` when missing,
/// unreadable or empty.
pub(crate) fn attr(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    (!text.is_empty()).then(|| text.to_string())
}

/// A number attribute (`512`, `1`).
pub(crate) fn number<T: FromStr>(path: &Path) -> Option<T> {
    attr(path)?.parse().ok()
}

/// A `0/1` attribute.
pub(crate) fn flag(path: &Path) -> Option<bool> {
    match attr(path)?.as_str() {
        "0" => Some(false),
        "1" => Some(true),
        _ => None,
    }
}

/// A hex attribute as sysfs writes it (`0x8086`), lower case without the
/// prefix (`8086`); `None` unless it is hex.
pub(crate) fn hex(path: &Path) -> Option<String> {
    let a = attr(path)?;
    let digits = a.strip_prefix("0x").unwrap_or(&a).to_ascii_lowercase();
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_hexdigit())).then_some(digits)
}

/// The last component of a symlink's target.
pub(crate) fn link_name(path: &Path) -> Option<String> {
    let target = std::fs::read_link(path).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_trimmed_and_empty_ones_are_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = |n: &str| dir.path().join(n);
        std::fs::write(p("model"), "QEMU HARDDISK    \n").expect("write");
        std::fs::write(p("empty"), "\n").expect("write");
        std::fs::write(p("vendor"), "0x8086\n").expect("write");
        std::fs::write(p("bad"), "0xzz\n").expect("write");
        std::fs::write(p("rot"), "1\n").expect("write");
        assert_eq!(attr(&p("model")).as_deref(), Some("QEMU HARDDISK"));
        assert_eq!(attr(&p("empty")), None);
        assert_eq!(attr(&p("missing")), None);
        assert_eq!(hex(&p("vendor")).as_deref(), Some("8086"));
        assert_eq!(hex(&p("bad")), None);
        assert_eq!(flag(&p("rot")), Some(true));
        assert_eq!(flag(&p("model")), None);
        assert_eq!(number::<u32>(&p("rot")), Some(1));
    }

    #[test]
    fn links_outside_the_tree_do_not_resolve() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("sys/bus/pci/devices")).expect("mkdir");
        let link = dir.path().join("sys/bus/pci/devices/0000:00:01.0");
        std::os::unix::fs::symlink("/", &link).expect("symlink");
        let fs = Sysfs::open(dir.path()).expect("open");
        assert_eq!(fs.real(&link), None);
    }
}
