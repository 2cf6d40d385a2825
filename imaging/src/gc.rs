//! Garbage collection: removing data no image refers to.
//!
//! Under the exclusive lock, `gc` marks every chunk and chunk list reachable
//! from a manifest, then:
//!
//! 1. deletes temp files of interrupted writes;
//! 2. repacks packs that are less than [`REPACK_BELOW`] live (copying live
//!    records as they are, after verifying them) into new packs;
//! 3. writes one new index file for all live chunks;
//! 4. deletes the old index files, then dead, repacked and unindexed packs,
//!    and unreferenced chunk lists.
//!
//! Each step is safe to interrupt: until step 3 completes the old index is
//! intact; after it, duplicates and orphans are harmless and the next `gc`
//! removes them.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::chunk::{ChunkId, ObjectId};
use crate::chunklist::Extent;
use crate::error::{Error, Result};
use crate::index::Index;
use crate::library::{id_of_key, index_key, Library};
use crate::pack::{PackBuilder, RECORD_HEADER};
use crate::progress::{ProgressSink, Throttle};
use crate::store::LockMode;

/// Packs whose live bytes fall below this fraction of their size are repacked.
pub const REPACK_BELOW: f64 = 0.5;

/// What `gc` did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct GcReport {
    /// Live chunks kept.
    pub chunks_live: u64,
    /// Packs deleted (dead, repacked or unindexed).
    pub packs_deleted: u64,
    /// Packs written by repacking.
    pub packs_written: u64,
    /// Index files replaced by the new one.
    pub index_files_merged: u64,
    /// Chunk lists deleted.
    pub lists_deleted: u64,
    /// Temp files removed.
    pub temp_files_removed: u64,
    /// Bytes freed.
    pub bytes_freed: u64,
}

/// Collects garbage in `lib`.
pub fn gc(lib: &Library, progress: &dyn ProgressSink) -> Result<GcReport> {
    let _lock = lib.lock(LockMode::Exclusive)?;
    let store = lib.store();
    let io = |op: &'static str, key: &str, e| Error::io(op, store.describe(key), e);
    let mut report = GcReport {
        temp_files_removed: store.clean_temp().map_err(|e| io("cleaning", "tmp", e))?,
        ..Default::default()
    };

    // Mark.
    let mut live: HashSet<ChunkId> = HashSet::new();
    let mut live_lists: HashSet<ObjectId> = HashSet::new();
    for name in lib.image_names()? {
        let m = lib.manifest(&name)?;
        for (_, stream) in m.streams() {
            let list = lib.read_list(&stream.list)?;
            live_lists.insert(stream.list);
            live.extend(list.extents().iter().filter_map(|e| match e {
                Extent::Chunk { id, .. } => Some(*id),
                Extent::Hole { .. } | Extent::Unused { .. } => None,
            }));
        }
    }
    let index_files = lib.index_files()?;
    let index = lib.load_index()?;

    // Live bytes per pack.
    let packs = store
        .list("packs/")
        .map_err(|e| io("listing", "packs", e))?;
    let sizes: HashMap<ObjectId, u64> = packs
        .iter()
        .filter_map(|o| Some((id_of_key(&o.key)?, o.size)))
        .collect();
    let mut live_bytes: HashMap<u32, u64> = HashMap::new();
    for (id, loc) in index.iter() {
        if live.contains(id) {
            *live_bytes.entry(loc.pack).or_default() += loc.entry.record_len() as u64;
        }
    }
    let repack: HashSet<u32> = (0..index.packs().len() as u32)
        .filter(|no| {
            let size = sizes.get(&index.pack_id(*no)).copied().unwrap_or(0);
            let l = live_bytes.get(no).copied().unwrap_or(0);
            l > 0 && (l as f64) < REPACK_BELOW * size as f64
        })
        .collect();

    // Repack, then build the new index.
    let mut new_index = Index::new();
    let mut moving: Vec<_> = index
        .iter()
        .filter(|(id, loc)| live.contains(id) && repack.contains(&loc.pack))
        .map(|(_, loc)| *loc)
        .collect();
    moving.sort_by_key(|l| (l.pack, l.entry.offset));
    let total: u64 = moving.iter().map(|l| l.entry.record_len() as u64).sum();
    let mut throttle = Throttle::new(progress, "gc", total);
    let mut done = 0u64;
    let mut builder = PackBuilder::new();
    let write = |b: PackBuilder, new_index: &mut Index, report: &mut GcReport| -> Result<()> {
        if b.chunks() > 0 {
            let (id, bytes, entries) = b.finish();
            lib.write_pack(&id, &bytes)?;
            new_index.add_pack(id, &entries);
            report.packs_written += 1;
        }
        Ok(())
    };
    for loc in &moving {
        // Copy the stored form as is, once it has proven sound.
        let mut record = vec![0u8; loc.entry.record_len()];
        lib.read_pack_range(
            &index.pack_id(loc.pack),
            u64::from(loc.entry.offset),
            &mut record,
        )?;
        lib.verify_record(&index, loc, &record, Vec::new())?;
        builder.add(
            loc.entry.id,
            loc.entry.codec,
            loc.entry.raw_len as usize,
            &record[RECORD_HEADER..],
        );
        if builder.is_full() {
            write(std::mem::take(&mut builder), &mut new_index, &mut report)?;
        }
        done += loc.entry.record_len() as u64;
        throttle.update(done);
    }
    write(builder, &mut new_index, &mut report)?;
    throttle.finish(done);
    for (id, loc) in index.iter() {
        if live.contains(id) && !repack.contains(&loc.pack) {
            new_index.add_pack(index.pack_id(loc.pack), &[loc.entry]);
        }
    }
    report.chunks_live = new_index.len() as u64;

    let kept: HashSet<ObjectId> = new_index.packs().iter().copied().collect();
    let dead_packs: Vec<&crate::store::ObjectInfo> = packs
        .iter()
        .filter(|o| id_of_key(&o.key).is_none_or(|id| !kept.contains(&id)))
        .collect();
    let unchanged = index_files.len() <= 1 && dead_packs.is_empty() && report.packs_written == 0;
    if !unchanged {
        let new_id = if new_index.is_empty() {
            None
        } else {
            Some(lib.write_index(&new_index)?)
        };
        for id in &index_files {
            if Some(*id) != new_id {
                store
                    .delete(&index_key(id))
                    .map_err(|e| io("removing", &index_key(id), e))?;
                report.index_files_merged += 1;
            }
        }
        for o in dead_packs {
            store
                .delete(&o.key)
                .map_err(|e| io("removing", &o.key, e))?;
            report.packs_deleted += 1;
            report.bytes_freed += o.size;
        }
    }
    for o in store
        .list("lists/")
        .map_err(|e| io("listing", "lists", e))?
    {
        if id_of_key(&o.key).is_none_or(|id| !live_lists.contains(&id)) {
            store
                .delete(&o.key)
                .map_err(|e| io("removing", &o.key, e))?;
            report.lists_deleted += 1;
            report.bytes_freed += o.size;
        }
    }
    Ok(report)
}
