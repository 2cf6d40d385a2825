//! Library objects from the fuzzer: the same bytes as a manifest, a chunk
//! list and an index file, and each line as a tree entry. Whatever decodes
//! must encode and decode to the same value.
#![no_main]

use imaging::chunklist::ChunkList;
use imaging::index::Index;
use imaging::manifest::Manifest;
use imaging::tree::Entry;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(mut m) = Manifest::decode(data) {
        let mut again = Manifest::decode(&m.encode()).expect("an encoded manifest decodes");
        // serde_json parses floats fast, not always correctly rounded: a
        // last-digit change in the capture time is not a ferry bug.
        m.stats.seconds = 0.0;
        again.stats.seconds = 0.0;
        assert_eq!(again, m, "manifest changed through encode/decode");
    }
    if let Ok(l) = ChunkList::decode(data) {
        let again = ChunkList::decode(&l.encode()).expect("an encoded chunk list decodes");
        assert_eq!(
            again.extents(),
            l.extents(),
            "chunk list changed through encode/decode"
        );
        assert_eq!(again.stream_len(), l.stream_len());
    }
    if let Ok(i) = Index::decode(data) {
        let again = Index::decode(&i.encode()).expect("an encoded index decodes");
        assert_eq!(again.len(), i.len(), "index changed through encode/decode");
        for (id, loc) in i.iter() {
            let moved = again.get(id).expect("every chunk survives encode/decode");
            assert_eq!(
                (again.pack_id(moved.pack), moved.entry),
                (i.pack_id(loc.pack), loc.entry),
                "chunk location changed through encode/decode"
            );
        }
    }
    for line in data.split(|&b| b == b'\n') {
        if let Ok(e) = serde_json::from_slice::<Entry>(line) {
            let json = serde_json::to_vec(&e).expect("an entry serialises");
            let back: Entry = serde_json::from_slice(&json).expect("an entry reads back");
            assert_eq!(back, e, "entry changed through JSON");
        }
    }
});
