//! An ext2/3/4 image from the fuzzer: open it, walk the whole tree, check
//! each entry survives its JSON form, and read (up to 1 MiB of) every
//! regular file. Errors are fine; panics, hangs and huge allocations are
//! the bugs this looks for.
#![no_main]

use std::io::{Read, Seek, SeekFrom};

use imaging::ext4::Ext4Tree;
use imaging::tree::{Entry, Kind};
use libfuzzer_sys::fuzz_target;

/// Bytes read per file, so a corrupt size cannot make one input slow.
const READ_LIMIT: u64 = 1 << 20;
/// Files opened per input.
const FILE_LIMIT: usize = 256;

fuzz_target!(|data: &[u8]| {
    let Ok(tree) = Ext4Tree::from_bytes(data.to_vec()) else {
        return;
    };
    let _ = (tree.uuid(), tree.label(), tree.replayed_journal_blocks());
    let mut files = Vec::new();
    let _ = tree.walk(&mut |e: Entry| {
        let json = serde_json::to_vec(&e).expect("an entry always serialises");
        let back: Entry = serde_json::from_slice(&json).expect("an entry reads back");
        assert_eq!(back, e, "entry changed through JSON");
        if e.kind == Kind::File && files.len() < FILE_LIMIT {
            files.push((e.path.0, e.ino, e.size));
        }
        Ok(())
    });
    let mut buf = vec![0u8; 64 << 10];
    for (path, ino, size) in files {
        let Ok(mut f) = tree.open_file(&path) else {
            continue;
        };
        assert_eq!(
            f.len(),
            size,
            "open_file length differs from the walk's size"
        );
        let ranges = f.data_ranges();
        assert!(
            ranges.windows(2).all(|w| w[0].end < w[1].start),
            "data ranges overlap or touch"
        );
        assert!(
            ranges.last().is_none_or(|r| r.end <= size),
            "data past the end"
        );
        let mut left = READ_LIMIT;
        while left > 0 {
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            match f.read(&mut buf[..want]) {
                Ok(0) | Err(_) => break,
                Ok(n) => left -= n as u64,
            }
        }
        if size > 10 {
            let _ = f.seek(SeekFrom::End(-10)).and_then(|_| f.read(&mut buf));
        }
        if let Ok(mut g) = tree.open_inode(ino) {
            let _ = g.read(&mut buf);
        }
    }
});
