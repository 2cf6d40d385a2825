//! Verification: re-reading stored data and checking every hash.
//!
//! [`verify_image`] checks one image: its manifest, chunk list, and every
//! chunk it uses (decoded and hashed). [`verify_library`] checks everything:
//! every pack byte for byte against its name and each record's chunk hash,
//! every index entry against its pack, every image. Problems are collected,
//! not fatal, so one report lists all of them. Leftovers of interrupted
//! captures (unindexed packs, temp files) are reported as notes: they are
//! harmless and `gc` removes them.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde::Serialize;

use crate::chunk::{ChunkId, ObjectId};
use crate::chunklist::Extent;
use crate::error::Result;
use crate::index::{Index, Location};
use crate::library::{id_of_key, pack_key, Library};
use crate::pack::parse_pack;
use crate::progress::{ProgressSink, Throttle};
use crate::store::LockMode;

/// The outcome of a verification.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    /// Images checked.
    pub images: Vec<String>,
    /// Chunks decoded and hashed.
    pub chunks_checked: u64,
    /// Stored bytes read.
    pub bytes_checked: u64,
    /// Everything found wrong; empty means clean.
    pub problems: Vec<String>,
    /// Harmless findings.
    pub notes: Vec<String>,
}

impl VerifyReport {
    /// True if nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The chunks an image uses, or the problems found reaching them.
fn image_chunks(
    lib: &Library,
    index: &Index,
    name: &str,
    report: &mut VerifyReport,
) -> HashSet<ChunkId> {
    let mut used = HashSet::new();
    let manifest = match lib.manifest(name) {
        Ok(m) => m,
        Err(e) => {
            report.problems.push(e.to_string());
            return used;
        }
    };
    report.images.push(name.to_string());
    for (disk, stream) in manifest.streams() {
        match lib.read_list(&stream.list) {
            Ok(list) => {
                for e in list.extents() {
                    if let Extent::Chunk { id, .. } = e {
                        if used.insert(*id) && !index.contains(id) {
                            report.problems.push(format!(
                                "image {name:?} {}: chunk {id} is missing from the index",
                                disk.name
                            ));
                        }
                    }
                }
            }
            Err(e) => report
                .problems
                .push(format!("image {name:?} {}: {e}", disk.name)),
        }
    }
    used
}

/// Checks image `name` and every chunk it uses.
pub fn verify_image(
    lib: &Library,
    name: &str,
    progress: &dyn ProgressSink,
) -> Result<VerifyReport> {
    let _lock = lib.lock(LockMode::Shared)?;
    let index = lib.load_index()?;
    let mut report = VerifyReport::default();
    let used = image_chunks(lib, &index, name, &mut report);
    let mut locs: Vec<&Location> = used.iter().filter_map(|id| index.get(id)).collect();
    locs.sort_by_key(|l| (l.pack, l.entry.offset));
    let total: u64 = locs.iter().map(|l| l.entry.record_len() as u64).sum();
    let mut throttle = Throttle::new(progress, "verify", total);
    for loc in locs {
        match lib.read_chunk(&index, loc) {
            Ok(_) => report.chunks_checked += 1,
            Err(e) => report.problems.push(e.to_string()),
        }
        report.bytes_checked += loc.entry.record_len() as u64;
        throttle.update(report.bytes_checked);
    }
    throttle.finish(report.bytes_checked);
    Ok(report)
}

/// Checks the whole library.
pub fn verify_library(lib: &Library, progress: &dyn ProgressSink) -> Result<VerifyReport> {
    let _lock = lib.lock(LockMode::Shared)?;
    let mut report = VerifyReport::default();
    let mut index = Index::new();
    for id in lib.index_files()? {
        match lib.read_index_file(&id) {
            Ok(i) => index.merge(&i),
            Err(e) => report.problems.push(e.to_string()),
        }
    }
    let store = lib.store();
    let packs = store
        .list("packs/")
        .map_err(|e| crate::error::Error::io("listing", store.describe("packs"), e))?;
    let indexed: HashSet<ObjectId> = index.packs().iter().copied().collect();
    let total: u64 = packs.iter().map(|p| p.size).sum();
    let mut throttle = Throttle::new(progress, "verify", total);
    // What each pack really holds, for checking the index against.
    let mut found: HashMap<ObjectId, HashMap<u32, ChunkId>> = HashMap::new();
    let mut unindexed = (0u64, 0u64);
    for obj in &packs {
        let path = store.describe(&obj.key);
        let Some(id) = id_of_key(&obj.key).filter(|_| obj.key.ends_with(".pack")) else {
            report
                .notes
                .push(format!("stray file {path} is not a pack"));
            continue;
        };
        if !indexed.contains(&id) {
            unindexed.0 += 1;
            unindexed.1 += obj.size;
            continue;
        }
        let bytes = match store.get(&obj.key) {
            Ok(b) => b,
            Err(e) => {
                report.problems.push(format!("reading {path}: {e}"));
                continue;
            }
        };
        report.bytes_checked += bytes.len() as u64;
        throttle.update(report.bytes_checked);
        if ChunkId::of(&bytes) != id {
            report.problems.push(format!(
                "{path} does not hash to its name (altered or truncated)"
            ));
        }
        let records = match parse_pack(&bytes) {
            Ok(r) => r,
            Err(e) => {
                report.problems.push(format!("{path}: {e}"));
                continue;
            }
        };
        let mut at = HashMap::new();
        for (entry, data) in records {
            at.insert(entry.offset, entry.id);
            let stored = crate::chunk::StoredChunk {
                id: entry.id,
                codec: entry.codec,
                raw_len: entry.raw_len as usize,
                data,
            };
            match stored.verify() {
                Ok(_) => report.chunks_checked += 1,
                Err(fault) => report.problems.push(format!(
                    "chunk {} in pack {path} (offset {}) failed verification: {fault}",
                    entry.id, entry.offset
                )),
            }
        }
        found.insert(id, at);
    }
    throttle.finish(report.bytes_checked);
    let mut missing_packs = BTreeSet::new();
    for (id, loc) in index.iter() {
        let pack = index.pack_id(loc.pack);
        match found.get(&pack) {
            None => {
                if !packs.iter().any(|o| o.key == pack_key(&pack)) {
                    missing_packs.insert(pack);
                }
            }
            Some(at) if at.get(&loc.entry.offset) != Some(id) => report.problems.push(format!(
                "index places chunk {id} at offset {} of pack {}, which holds no such record",
                loc.entry.offset,
                store.describe(&pack_key(&pack))
            )),
            Some(_) => {}
        }
    }
    for pack in missing_packs {
        report.problems.push(format!(
            "pack {} is in the index but missing",
            store.describe(&pack_key(&pack))
        ));
    }
    for name in lib.image_names()? {
        image_chunks(lib, &index, &name, &mut report);
    }
    if unindexed.0 > 0 {
        report.notes.push(format!(
            "{} pack(s), {} bytes, are not in any index (left by interrupted captures); `ferry image gc` removes them",
            unindexed.0, unindexed.1
        ));
    }
    let temps = store.list("tmp/").map(|v| v.len()).unwrap_or(0);
    if temps > 0 {
        report.notes.push(format!(
            "{temps} temp file(s) from interrupted writes; `ferry image gc` removes them"
        ));
    }
    Ok(report)
}
