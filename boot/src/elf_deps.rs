//! The shared libraries a program needs, found as dracut's `inst_binary`
//! finds them, without running `ldd`.
//!
//! [`needs`] reads an x86-64 ELF file's program headers: `PT_INTERP` (the
//! dynamic loader) and `PT_DYNAMIC`, whose `DT_NEEDED` names (and
//! `DT_RUNPATH`/`DT_RPATH` directories, `$ORIGIN` expanded) are looked up
//! in this order: the run path, the directories of `ld.so.conf` (with its
//! `include` globs), then the default `/lib/x86_64-linux-gnu`,
//! `/usr/lib/x86_64-linux-gnu`, `/lib64`, `/lib`, `/usr/lib`.
//! [`closure`] follows the libraries' own needs. Only 64-bit little-endian
//! ELF is read; anything else (a script, a static binary) needs nothing.
//! Every offset is bounds-checked: malformed files give an error naming the
//! file, never a panic.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Why a program's libraries could not be found.
#[derive(Debug, thiserror::Error)]
pub enum ElfDepsError {
    /// A file could not be read.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The ELF structures are inconsistent.
    #[error("{}: malformed ELF: {problem}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A needed library is in none of the search directories.
    #[error("{}: needs {name}, which is in none of {dirs}", path.display())]
    NotFound {
        /// The program or library needing it.
        path: PathBuf,
        /// The `DT_NEEDED` name.
        name: String,
        /// The directories searched.
        dirs: String,
    },
}

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
const DT_RPATH: u64 = 15;
const DT_RUNPATH: u64 = 29;

/// What one ELF file asks of the dynamic loader.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Needs {
    /// The `PT_INTERP` path (`/lib64/ld-linux-x86-64.so.2`).
    pub interpreter: Option<String>,
    /// `DT_NEEDED` names, in order.
    pub needed: Vec<String>,
    /// `DT_RUNPATH` (or `DT_RPATH`) directories, `$ORIGIN` unexpanded.
    pub runpath: Vec<String>,
}

fn u16_at(d: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(d.get(o..o + 2)?.try_into().ok()?))
}
fn u32_at(d: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(d.get(o..o + 4)?.try_into().ok()?))
}
fn u64_at(d: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(d.get(o..o + 8)?.try_into().ok()?))
}

fn cstr_at(d: &[u8], o: usize) -> Option<String> {
    let rest = d.get(o..)?;
    let end = rest.iter().position(|&b| b == 0)?;
    Some(String::from_utf8_lossy(&rest[..end]).into_owned())
}

/// Parses `data` (read from `path`, named in errors). Not ELF64-LE: no needs.
pub fn parse(path: &Path, data: &[u8]) -> Result<Needs, ElfDepsError> {
    if !data.starts_with(b"\x7fELF\x02\x01") {
        return Ok(Needs::default());
    }
    let bad = |problem: &str| ElfDepsError::Malformed {
        path: path.to_path_buf(),
        problem: problem.to_string(),
    };
    let phoff = u64_at(data, 0x20).ok_or_else(|| bad("truncated header"))? as usize;
    let phentsize = u16_at(data, 0x36).ok_or_else(|| bad("truncated header"))? as usize;
    let phnum = u16_at(data, 0x38).ok_or_else(|| bad("truncated header"))? as usize;
    if phentsize < 56 && phnum > 0 {
        return Err(bad("program header entries under 56 bytes"));
    }
    let mut loads = Vec::new();
    let mut dynamic = None;
    let mut needs = Needs::default();
    for i in 0..phnum {
        let h = phoff
            .checked_add(i * phentsize)
            .ok_or_else(|| bad("program header offset overflows"))?;
        let p_type = u32_at(data, h).ok_or_else(|| bad("program header out of file"))?;
        let off = u64_at(data, h + 8).ok_or_else(|| bad("program header out of file"))?;
        let vaddr = u64_at(data, h + 16).ok_or_else(|| bad("program header out of file"))?;
        let filesz = u64_at(data, h + 32).ok_or_else(|| bad("program header out of file"))?;
        match p_type {
            PT_LOAD => loads.push((vaddr, off, filesz)),
            PT_DYNAMIC => dynamic = Some((off as usize, filesz as usize)),
            PT_INTERP => {
                needs.interpreter = Some(
                    cstr_at(data, off as usize)
                        .ok_or_else(|| bad(&format!("PT_INTERP at offset {off} out of file")))?,
                )
            }
            _ => {}
        }
    }
    let Some((dyn_off, dyn_size)) = dynamic else {
        return Ok(needs);
    };
    let to_offset = |vaddr: u64| {
        loads
            .iter()
            .find(|(va, _, sz)| vaddr >= *va && vaddr < va.saturating_add(*sz))
            .map(|(va, off, _)| (vaddr - va + off) as usize)
    };
    let mut strtab = None;
    let mut needed = Vec::new();
    let mut runpath = Vec::new();
    let mut o = dyn_off;
    while o + 16 <= dyn_off.saturating_add(dyn_size) {
        let tag =
            u64_at(data, o).ok_or_else(|| bad(&format!("dynamic entry at {o} out of file")))?;
        let val =
            u64_at(data, o + 8).ok_or_else(|| bad(&format!("dynamic entry at {o} out of file")))?;
        match tag {
            0 => break,
            DT_NEEDED => needed.push(val),
            DT_STRTAB => strtab = Some(val),
            DT_RPATH | DT_RUNPATH => runpath.push(val),
            _ => {}
        }
        o += 16;
    }
    let strtab = match strtab {
        Some(v) => to_offset(v).ok_or_else(|| bad(&format!("DT_STRTAB {v:#x} in no PT_LOAD")))?,
        None if needed.is_empty() => return Ok(needs),
        None => return Err(bad("DT_NEEDED without DT_STRTAB")),
    };
    let string = |v: u64| {
        cstr_at(data, strtab.saturating_add(v as usize))
            .ok_or_else(|| bad(&format!("string {v} past the end of the file")))
    };
    for v in needed {
        needs.needed.push(string(v)?);
    }
    for v in runpath {
        needs.runpath.extend(
            string(v)?
                .split(':')
                .filter(|s| !s.is_empty())
                .map(String::from),
        );
    }
    Ok(needs)
}

/// The library search directories of the system at `root`: `ld.so.conf`
/// (and its includes), then the defaults.
pub fn search_dirs(root: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    read_ld_so_conf(root, &root.join("etc/ld.so.conf"), &mut dirs, 0);
    for d in [
        "/lib/x86_64-linux-gnu",
        "/usr/lib/x86_64-linux-gnu",
        "/lib64",
        "/lib",
        "/usr/lib",
    ] {
        let p = PathBuf::from(d);
        if !dirs.contains(&p) {
            dirs.push(p);
        }
    }
    dirs
}

fn read_ld_so_conf(root: &Path, file: &Path, dirs: &mut Vec<PathBuf>, depth: u32) {
    if depth > 8 {
        return;
    }
    let Ok(text) = std::fs::read_to_string(file) else {
        return;
    };
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if let Some(pattern) = line.strip_prefix("include ") {
            let pattern = pattern.trim();
            let (dir, glob) = match pattern.rsplit_once('/') {
                Some((d, g)) => (d, g),
                None => (".", pattern),
            };
            let dir = root.join(dir.trim_start_matches('/'));
            let glob = drivers_db::Pattern::new(glob);
            let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| glob.matches(&e.file_name().to_string_lossy()))
                .map(|e| e.path())
                .collect();
            names.sort();
            for n in names {
                read_ld_so_conf(root, &n, dirs, depth + 1);
            }
        } else if line.starts_with('/') {
            let p = PathBuf::from(line);
            if !dirs.contains(&p) {
                dirs.push(p);
            }
        }
    }
}

/// Every library `program` needs, transitively, with the loader: absolute
/// paths on the system at `root` (as they appear there, symlinks not
/// followed), sorted.
pub fn closure(root: &Path, program: &Path) -> Result<BTreeSet<PathBuf>, ElfDepsError> {
    let dirs = search_dirs(root);
    let mut out = BTreeSet::new();
    let mut todo = vec![program.to_path_buf()];
    let mut seen = BTreeSet::new();
    while let Some(file) = todo.pop() {
        if !seen.insert(file.clone()) {
            continue;
        }
        let on_disk = root.join(file.strip_prefix("/").unwrap_or(&file));
        let data = std::fs::read(&on_disk).map_err(|source| ElfDepsError::Read {
            path: on_disk.clone(),
            source,
        })?;
        let needs = parse(&on_disk, &data)?;
        if let Some(interp) = needs.interpreter {
            out.insert(PathBuf::from(&interp));
            todo.push(PathBuf::from(interp));
        }
        let origin = file
            .parent()
            .unwrap_or(Path::new("/"))
            .display()
            .to_string();
        let mut search: Vec<PathBuf> = needs
            .runpath
            .iter()
            .map(|r| PathBuf::from(r.replace("$ORIGIN", &origin).replace("${ORIGIN}", &origin)))
            .collect();
        search.extend(dirs.iter().cloned());
        for name in needs.needed {
            let found = if name.contains('/') {
                Some(PathBuf::from(&name))
            } else {
                search
                    .iter()
                    .map(|d| d.join(&name))
                    .find(|p| root.join(p.strip_prefix("/").unwrap_or(p)).exists())
            };
            let Some(lib) = found else {
                return Err(ElfDepsError::NotFound {
                    path: file.clone(),
                    name,
                    dirs: search
                        .iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(":"),
                });
            };
            out.insert(lib.clone());
            todo.push(lib);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_mke2fs_needs_libc_and_the_loader() {
        let prog = Path::new("/sbin/mke2fs");
        if !prog.exists() {
            eprintln!("SKIP: /sbin/mke2fs is not installed");
            return;
        }
        let libs = closure(Path::new("/"), prog).expect("host mke2fs parses");
        let names: Vec<String> = libs
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        assert!(names.iter().any(|n| n.starts_with("libc.so")), "{names:?}");
        assert!(
            names.iter().any(|n| n.starts_with("libext2fs.so")),
            "{names:?}"
        );
        assert!(
            names.iter().any(|n| n.starts_with("ld-linux-x86-64")),
            "{names:?}"
        );
    }

    #[test]
    fn static_busybox_and_scripts_need_nothing() {
        assert_eq!(
            parse(Path::new("x"), b"#!/bin/sh\n").expect("script"),
            Needs::default()
        );
        let bb = Path::new("/bin/busybox");
        if bb.exists() {
            let data = std::fs::read(bb).expect("read busybox");
            let n = parse(bb, &data).expect("busybox parses");
            assert!(n.interpreter.is_none() && n.needed.is_empty(), "{n:?}");
        }
    }

    #[test]
    fn truncated_elf_is_an_error_not_a_panic() {
        let data = std::fs::read("/bin/ls").unwrap_or_default();
        for cut in [6usize, 64, 100, 400, 1000, 5000] {
            if data.len() > cut {
                let _ = parse(Path::new("/bin/ls"), &data[..cut]);
            }
        }
        let mut bogus = b"\x7fELF\x02\x01".to_vec();
        bogus.resize(64, 0xff);
        assert!(parse(Path::new("bogus"), &bogus).is_err());
    }
}
