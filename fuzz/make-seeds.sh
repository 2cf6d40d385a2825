#!/usr/bin/env bash
# Builds the seed inputs under fuzz/seeds/ (committed; under 1 MB in all):
#   seeds/ext4_walk/*.img      tiny ext2/ext4 images (96 KiB each) made with
#                              mkfs -d from a staging tree with a directory,
#                              a hard link, fast and slow symlinks, a FIFO, a
#                              sparse file, user xattrs and a POSIX ACL; in
#                              four layouts (ext4 with and without metadata
#                              checksums, ext2 with 128-byte inodes, ext4
#                              with inline data)
#   seeds/library_objects/*    a manifest, a chunk list, an index file and
#                              tree-entry JSON lines, in ferry's formats
# Needs e2fsprogs, attr, acl and python3. Deterministic apart from what
# mke2fs cannot fix (it is seeded with a fixed UUID, hash seed and time).
set -euo pipefail
cd "$(dirname "$0")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

s=$work/staging
mkdir -p "$s/dir/sub"
echo hello > "$s/dir/file"
ln "$s/dir/file" "$s/hardlink"
ln -s dir/file "$s/fast-symlink"
ln -s "$(printf 'long%.0s' $(seq 20))" "$s/slow-symlink"
mkfifo "$s/fifo"
truncate -s 40K "$s/sparse" && echo tail >> "$s/sparse"
printf 'tiny' > "$s/dir/sub/tiny"
setfattr -n user.comment -v seed "$s/dir/file"
setfacl -m u:1000:r,g:1000:rw "$s/dir/file"
touch -h -d '2021-03-04 05:06:07' "$s" "$s"/* "$s"/dir/* "$s"/dir/sub/*

out=seeds/ext4_walk
rm -rf "$out" && mkdir -p "$out"
export E2FSPROGS_FAKE_TIME=1700000000
mk() { # name mkfs-program options...
  local name=$1 prog=$2; shift 2
  "$prog" -q -F -b 1024 -N 32 -U 0f0e0d0c-0b0a-0908-0706-050403020100 \
    -E hash_seed=00112233-4455-6677-8899-aabbccddeeff "$@" -d "$s" "$out/$name.img" 96K
}
mk ext4-csum mkfs.ext4 -O ^has_journal,^resize_inode
mk ext4-nocsum mkfs.ext4 -O ^has_journal,^resize_inode,^metadata_csum
mk ext2-128 mkfs.ext2 -I 128 -O ^resize_inode
mk ext4-inline mkfs.ext4 -O ^has_journal,^resize_inode,inline_data

out=seeds/library_objects
rm -rf "$out" && mkdir -p "$out"
python3 - "$out" <<'PY'
import json, struct, sys
out = sys.argv[1]
h = lambda b: bytes([b]) * 32
# Chunk list: "FERRYLST" | version | extent_count | stream_len, then
# kind u8 | 0 x3 | count u32 | len u64 | chunk id [32].
ext = [(1, 2, 65536, h(1)), (0, 1, 1 << 20, bytes(32)), (1, 1, 1000, h(2))]
body = b"".join(struct.pack("<B3xIQ", k, c, l) + i for k, c, l, i in ext)
total = sum(c * l for _, c, l, _ in ext)
open(f"{out}/chunklist", "wb").write(b"FERRYLST" + struct.pack("<IQQ", 1, len(ext), total) + body)
# Index: "FERRYIDX" | version | pack_count | entry_count | pack ids, then
# chunk id | pack_no | offset | stored_len | raw_len | codec u8 | 0 x3.
packs = [h(0xa0), h(0xb0)]
entries = [(h(1), 0, 0, 100, 65536, 1), (h(2), 1, 0, 1000, 1000, 0), (h(3), 1, 1100, 50, 50, 0)]
body = b"".join(packs) + b"".join(i + struct.pack("<IIIIB3x", p, o, s, r, c) for i, p, o, s, r, c in entries)
open(f"{out}/index", "wb").write(b"FERRYIDX" + struct.pack("<IIQ", 1, len(packs), len(entries)) + body)
chunker = {"algorithm": "fastcdc-v2020", "crate_version": "5.0.0", "min_size": 16384,
           "avg_size": 65536, "max_size": 262144, "normalization": 1, "zero_run_min": 65536}
manifest = {"format": "ferry-image", "version": 1, "name": "seed-v1",
            "created": "2026-01-02T03:04:05.123456789Z", "parent": None, "chunker": chunker,
            "disks": [{"name": "disk0", "source": "/dev/vdb", "size": 1180648,
                       "content": {"kind": "whole", "stream": {"size": 1180648, "list": "11" * 32,
                                   "extents": 3, "chunks": 3, "data_bytes": 132072, "hole_bytes": 1048576}}}],
            "stats": {"bytes_read": 132072, "chunks": 3, "chunks_new": 3, "bytes_new": 132072,
                      "stored_new": 1100, "seconds": 0.25}}
open(f"{out}/manifest.json", "w").write(json.dumps(manifest, indent=2))
lines = [
    {"path": "", "kind": "dir", "mode": 0o755, "uid": 0, "gid": 0, "mtime": 1, "mtime_ns": 2},
    {"path": "etc/passwd", "kind": "file", "mode": 0o644, "uid": 0, "gid": 0, "mtime": -1, "mtime_ns": 999999999,
     "size": 100, "content": {"extents": [{"id": "22" * 32, "len": 60}, {"hole": 40}]}, "ino": 12,
     "xattrs": [["security.selinux", "system_u:object_r:etc_t:s0"], ["user.bin", {"hex": "00ff"}]]},
    {"path": {"hex": "6261ff"}, "kind": "symlink", "mode": 0o777, "uid": 100000, "gid": 200000,
     "mtime": 4102542245, "mtime_ns": 0, "target": {"hex": "ff"}},
    {"path": "dev/sda", "kind": "block", "mode": 0o660, "uid": 0, "gid": 6, "mtime": 0, "mtime_ns": 0,
     "rdev": [8, 0], "hardlink": "dev/disk"},
]
open(f"{out}/entries.jsonl", "w").write("\n".join(json.dumps(l) for l in lines) + "\n")
PY
du -sh seeds
