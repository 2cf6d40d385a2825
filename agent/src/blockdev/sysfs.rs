//! Block devices as sysfs shows them: a device's directory from its
//! device number, its partitions, their holders and their `/dev` names.

use std::io;
use std::path::{Path, PathBuf};

/// One block device in sysfs.
#[derive(Clone, Debug)]
pub(crate) struct Node {
    /// Its kernel name (`sda1`, `loop0p1`, `dm-0`).
    pub(crate) name: String,
    /// Its `major:minor`.
    pub(crate) dev: String,
    /// Its sysfs directory.
    pub(crate) dir: PathBuf,
    /// Its partition number, for a partition.
    pub(crate) number: Option<u32>,
}

impl Node {
    /// Its `/dev` node: `DEVNAME` from `uevent`, else its kernel name.
    pub(crate) fn devnode(&self) -> PathBuf {
        let name = std::fs::read_to_string(self.dir.join("uevent"))
            .ok()
            .and_then(|u| {
                u.lines()
                    .find_map(|l| l.strip_prefix("DEVNAME=").map(str::to_string))
            })
            .unwrap_or_else(|| self.name.clone());
        Path::new("/dev").join(name)
    }

    /// The kernel names in its `holders` directory.
    pub(crate) fn holders(&self) -> io::Result<Vec<String>> {
        names_in(&self.dir.join("holders"))
    }
}

/// `major:minor` of a device number.
pub(crate) fn dev_string(rdev: u64) -> String {
    format!(
        "{}:{}",
        nix::sys::stat::major(rdev),
        nix::sys::stat::minor(rdev)
    )
}

/// The block device `major:minor` under `sys` (`/sys`).
pub(crate) fn node(sys: &Path, dev: &str) -> io::Result<Node> {
    let dir = std::fs::canonicalize(sys.join("dev/block").join(dev))?;
    node_at(dir)
}

fn node_at(dir: PathBuf) -> io::Result<Node> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dev = read_trimmed(&dir.join("dev"))?;
    let number = read_trimmed(&dir.join("partition"))
        .ok()
        .and_then(|n| n.parse().ok());
    Ok(Node {
        name,
        dev,
        dir,
        number,
    })
}

/// The partitions of `disk`, by number.
pub(crate) fn partitions(disk: &Node) -> io::Result<Vec<Node>> {
    let mut out = Vec::new();
    for name in names_in(&disk.dir)? {
        let dir = disk.dir.join(&name);
        if dir.join("partition").is_file() {
            out.push(node_at(dir)?);
        }
    }
    out.sort_by_key(|n| n.number);
    Ok(out)
}

/// The entry names of a directory, sorted; empty when it does not exist.
pub(crate) fn names_in(dir: &Path) -> io::Result<Vec<String>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut names = rd
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<io::Result<Vec<_>>>()?;
    names.sort();
    Ok(names)
}

/// A sysfs attribute without its trailing newline.
pub(crate) fn read_trimmed(p: &Path) -> io::Result<String> {
    Ok(std::fs::read_to_string(p)?.trim_end().to_string())
}
