//! Reading unmounted ext2/3/4 file systems with full metadata (in progress).
