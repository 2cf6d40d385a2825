//! ferry's own `depmod`: the text indexes of a module tree, made from the
//! `.modinfo` of each module file.
//!
//! Debian's `linux-image-*` packages ship `modules.builtin`,
//! `modules.builtin.modinfo` and `modules.order` but not `modules.alias` or
//! `modules.dep`: dpkg's postinst runs `depmod`. The driver library runs
//! `depmod -b` when the host has it, and [`generate_indexes`] otherwise. It
//! writes what [`crate::KernelModules`] reads, the way kmod's depmod does:
//!
//! - `modules.alias`: `alias <pattern> <module>` for every `alias=` of every
//!   module (patterns with white space, which no line can carry, are left
//!   out);
//! - `modules.dep`: `path: dep-paths` with all transitive dependencies
//!   (`depends=`), ordered as depmod orders them: by a topological index in
//!   which a module comes before the modules it needs, so the most basic
//!   come last;
//! - `modules.softdep`: `softdep <module> <value>` for every `softdep=`.
//!
//! Modules are listed in `modules.order` order, then the rest by path.
//! When two files have the same module name, one under `updates/` wins,
//! else the first by path (depmod's default search order). The `.bin`
//! indexes, `modules.symbols` and `modules.devname` are not written: ferry
//! does not read them, and `depmod` can be run on the target if needed.
//! Symbol-version checks are not made.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::Path;

use crate::error::LibraryError;
use crate::modalias::module_name_from_path;
use crate::modinfo::Modinfo;

/// A module file found in the tree.
struct Found {
    /// Its path relative to the tree, with `/` separators.
    path: String,
    /// What its `.modinfo` says.
    info: Modinfo,
}

/// Collects the module files under `dir` (relative to `tree`), not
/// following links and skipping `build` and `source` at the top.
fn walk(tree: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), LibraryError> {
    let entries = fs::read_dir(dir).map_err(LibraryError::io("listing", dir))?;
    for entry in entries {
        let entry = entry.map_err(LibraryError::io("listing", dir))?;
        let path = entry.path();
        let kind = entry
            .file_type()
            .map_err(LibraryError::io("inspecting", &path))?;
        let Ok(rel) = path.strip_prefix(tree) else {
            continue;
        };
        let Some(rel) = rel.to_str() else { continue };
        if kind.is_dir() && rel != "build" && rel != "source" {
            walk(tree, &path, out)?;
        } else if kind.is_file() && module_name_from_path(rel).is_some() {
            out.push(rel.to_owned());
        }
    }
    Ok(())
}

/// Picks one file per module name and orders the modules: `modules.order`
/// first, then by path.
fn select(tree: &Path, mut paths: Vec<String>) -> Result<Vec<(String, String)>, LibraryError> {
    paths.sort();
    let mut chosen: HashMap<String, String> = HashMap::new();
    for path in paths {
        let Some(name) = module_name_from_path(&path) else {
            continue;
        };
        let replace = match chosen.get(&name) {
            None => true,
            Some(existing) => path.starts_with("updates/") && !existing.starts_with("updates/"),
        };
        if replace {
            chosen.insert(name, path);
        }
    }
    let order_path = tree.join("modules.order");
    let order = match fs::read_to_string(&order_path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(LibraryError::io("reading", &order_path)(e)),
    };
    let mut rank: HashMap<String, usize> = HashMap::new();
    for (index, line) in order.lines().enumerate() {
        if let Some(name) = module_name_from_path(line.trim()) {
            rank.entry(name).or_insert(index);
        }
    }
    let mut modules: Vec<(String, String)> = chosen.into_iter().collect();
    modules.sort_by(|(a_name, a_path), (b_name, b_path)| {
        let key = |name: &String| rank.get(name).copied().unwrap_or(usize::MAX);
        key(a_name)
            .cmp(&key(b_name))
            .then_with(|| a_path.cmp(b_path))
    });
    Ok(modules)
}

/// depmod's dependency sort index: modules nothing depends on first, then
/// (Kahn's algorithm, with a stack as kmod's depmod has) each module once
/// all its users are placed; modules on a cycle come last, in list order.
/// Ties may break differently from depmod, which orders a module's direct
/// dependencies by symbol resolution, not by `depends=`: any such order
/// loads correctly.
fn sort_index(direct: &[Vec<usize>]) -> Vec<usize> {
    let mut users = vec![0usize; direct.len()];
    for deps in direct {
        for &d in deps {
            users[d] += 1;
        }
    }
    let mut stack: Vec<usize> = (0..direct.len()).filter(|&i| users[i] == 0).collect();
    let mut index = vec![usize::MAX; direct.len()];
    let mut next = 0;
    while let Some(module) = stack.pop() {
        index[module] = next;
        next += 1;
        for &d in &direct[module] {
            users[d] -= 1;
            if users[d] == 0 {
                stack.push(d);
            }
        }
    }
    for slot in index.iter_mut().filter(|i| **i == usize::MAX) {
        *slot = next;
        next += 1;
    }
    index
}

/// Every module `start` needs, directly or not (not itself).
fn transitive(direct: &[Vec<usize>], start: usize) -> Vec<usize> {
    let mut seen = HashSet::from([start]);
    let mut stack = direct[start].clone();
    let mut out = Vec::new();
    while let Some(module) = stack.pop() {
        if seen.insert(module) {
            out.push(module);
            stack.extend(&direct[module]);
        }
    }
    out
}

/// Writes `contents` to `tree/name` through a temporary file and a rename.
fn write_index(tree: &Path, name: &str, contents: &str) -> Result<(), LibraryError> {
    let path = tree.join(name);
    let temp = tree.join(format!(".{name}.tmp"));
    fs::write(&temp, contents).map_err(LibraryError::io("writing", &temp))?;
    fs::rename(&temp, &path).map_err(LibraryError::io("renaming to", &path))
}

/// Writes `modules.alias`, `modules.dep` and `modules.softdep` for the
/// module tree at `tree` (see the module documentation); returns how many
/// modules it indexed. A module file whose `.modinfo` cannot be read fails
/// the whole run, naming the file.
pub fn generate_indexes(tree: &Path) -> Result<usize, LibraryError> {
    let mut paths = Vec::new();
    walk(tree, tree, &mut paths)?;
    let modules: Vec<Found> = select(tree, paths)?
        .into_iter()
        .map(|(_, path)| {
            let info = Modinfo::read(&tree.join(&path))?;
            Ok(Found { path, info })
        })
        .collect::<Result<_, LibraryError>>()?;
    let by_name: HashMap<String, usize> = modules
        .iter()
        .enumerate()
        .filter_map(|(i, m)| Some((module_name_from_path(&m.path)?, i)))
        .collect();
    let direct: Vec<Vec<usize>> = modules
        .iter()
        .map(|m| {
            m.info
                .depends
                .iter()
                .filter_map(|d| by_name.get(d).copied())
                .collect()
        })
        .collect();
    let index = sort_index(&direct);

    let mut alias = String::from("# Aliases extracted from modules themselves.\n");
    let mut dep = String::new();
    let mut softdep = String::from("# Soft dependencies extracted from modules themselves.\n");
    for (i, module) in modules.iter().enumerate() {
        let name = module_name_from_path(&module.path).unwrap_or_default();
        for pattern in &module.info.alias {
            if !pattern.is_empty() && !pattern.contains(char::is_whitespace) {
                alias.push_str(&format!("alias {pattern} {name}\n"));
            }
        }
        let mut deps = transitive(&direct, i);
        deps.sort_by_key(|&d| index[d]);
        dep.push_str(&module.path);
        dep.push(':');
        for d in deps {
            dep.push(' ');
            dep.push_str(&modules[d].path);
        }
        dep.push('\n');
        for value in &module.info.softdep {
            softdep.push_str(&format!("softdep {name} {value}\n"));
        }
    }
    write_index(tree, "modules.alias", &alias)?;
    write_index(tree, "modules.softdep", &softdep)?;
    // Last: the library takes modules.dep as the mark of a finished tree.
    write_index(tree, "modules.dep", &dep)?;
    Ok(modules.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::tests::build;
    use crate::KernelModules;

    fn module(tree: &Path, path: &str, modinfo: &str) {
        let file = tree.join(path);
        fs::create_dir_all(file.parent().expect("has a parent")).expect("mkdir");
        let elf = build(
            true,
            false,
            &[(".modinfo", modinfo.replace(';', "\0").as_bytes())],
        );
        fs::write(file, elf).expect("write module");
    }

    #[test]
    fn indexes_a_small_tree_like_depmod() {
        let dir = tempfile::tempdir().expect("temp dir");
        let tree = dir.path();
        module(tree, "kernel/virtio.ko", "name=virtio;depends=;");
        module(
            tree,
            "kernel/virtio_ring.ko",
            "name=virtio_ring;depends=virtio;",
        );
        module(
            tree,
            "kernel/virtio_blk.ko",
            "alias=virtio:d00000002v*;depends=virtio_ring,virtio;name=virtio_blk",
        );
        module(
            tree,
            "kernel/ext4.ko",
            "softdep=pre: crc32c;name=ext4;alias=fs-ext4;alias=bad alias;depends=jbd2",
        );
        module(tree, "kernel/jbd2.ko", "name=jbd2;depends=");
        module(tree, "kernel/old/jbd2.ko", "name=jbd2;depends=");
        module(tree, "updates/jbd2.ko", "name=jbd2;depends=");
        fs::write(
            tree.join("modules.order"),
            "kernel/ext4.ko\nkernel/virtio.ko\n",
        )
        .expect("order");
        fs::create_dir(tree.join("build")).expect("build dir");
        module(tree, "build/ignored.ko", "name=ignored");

        assert_eq!(generate_indexes(tree).expect("generates"), 5);
        let dep = fs::read_to_string(tree.join("modules.dep")).expect("dep");
        let lines: Vec<&str> = dep.lines().collect();
        assert_eq!(
            lines,
            [
                "kernel/ext4.ko: updates/jbd2.ko",
                "kernel/virtio.ko:",
                "kernel/virtio_blk.ko: kernel/virtio_ring.ko kernel/virtio.ko",
                "kernel/virtio_ring.ko: kernel/virtio.ko",
                "updates/jbd2.ko:",
            ]
        );
        let alias = fs::read_to_string(tree.join("modules.alias")).expect("alias");
        assert!(
            alias.contains("alias virtio:d00000002v* virtio_blk\n"),
            "{alias}"
        );
        assert!(alias.contains("alias fs-ext4 ext4\n"), "{alias}");
        assert!(!alias.contains("bad alias"), "{alias}");
        let softdep = fs::read_to_string(tree.join("modules.softdep")).expect("softdep");
        assert!(softdep.contains("softdep ext4 pre: crc32c\n"), "{softdep}");

        let km = KernelModules::load(tree).expect("loads");
        assert_eq!(
            km.match_modalias("virtio:d00000002v00001AF4"),
            ["virtio_blk"]
        );
        assert_eq!(
            km.closure(&["virtio_blk".to_owned()]),
            ["virtio", "virtio_ring", "virtio_blk"]
        );
    }

    #[test]
    fn a_broken_module_is_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::create_dir(dir.path().join("kernel")).expect("mkdir");
        fs::write(dir.path().join("kernel/bad.ko.xz"), b"\xFD7zXZ\0broken").expect("write");
        let err = generate_indexes(dir.path()).expect_err("broken module");
        assert!(err.to_string().contains("kernel/bad.ko.xz"), "{err}");
    }

    #[test]
    fn sort_index_puts_users_first() {
        // 0 -> 1 -> 2, 3 -> 2, and a cycle 4 <-> 5.
        let direct = vec![vec![1], vec![2], vec![], vec![2], vec![5], vec![4]];
        let index = sort_index(&direct);
        assert!(index[0] < index[1] && index[1] < index[2] && index[3] < index[2]);
        assert!(index[4] >= 4 && index[5] >= 4);
    }
}
