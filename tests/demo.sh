#!/usr/bin/env bash
# The demo behind `./run demo`: builds a sample disk with real content (an MBR
# disk whose ext4 partition holds this machine's /usr/share/doc and man pages),
# captures it into the default library (./ferry-library), changes it, captures
# it again incrementally, restores both versions, checks them byte for byte and
# with e2fsck, verifies the library, and prints a summary.
set -euo pipefail
FERRY=${FERRY_BIN:-target/release/ferry}
WORK=${FERRY_DEMO_DIR:-/var/tmp/ferry-demo}
export FERRY_LIBRARY=${FERRY_LIBRARY:-$PWD/ferry-library}
STAMP=$(date +%Y%m%d-%H%M%S)
rm -rf "$WORK"; mkdir -p "$WORK"
MNT=$WORK/mnt; LOOP=
cleanup() {
  mountpoint -q "$MNT" 2>/dev/null && umount "$MNT"
  [[ -n $LOOP ]] && losetup -d "$LOOP" 2>/dev/null
  return 0
}
trap cleanup EXIT
step() { printf '\n== %s\n' "$*" >&2; }
json_field() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval("d"+sys.argv[2]))' "$@"; }

step "building a 2 GiB sample disk: MBR, one ext4 partition with real files"
DISK=$WORK/disk.img
truncate -s 2G "$DISK"
printf 'label: dos\nstart=2048, type=83, bootable\n' | sfdisk -q "$DISK"
mkdir -p "$WORK/tree"
cp -a /usr/share/doc /usr/share/man "$WORK/tree/"
mkfs.ext4 -q -F -L demo-root -E offset=$((2048 * 512)) -d "$WORK/tree" "$DISK" $(( (2 * 1024 * 1024 - 1024) ))k
du -h --apparent-size "$DISK" | sed 's/^/  apparent /' >&2
du -h "$DISK" | sed 's/^/  allocated /' >&2

step "capture v1 into $FERRY_LIBRARY"
"$FERRY" capture "$DISK" --name "demo-$STAMP-v1" --json > "$WORK/v1.json"
cp --sparse=always "$DISK" "$WORK/v1.img"

step "changing the disk: adding /usr/share/locale, editing a file"
mkdir -p "$MNT"
mount -o loop,offset=$((2048 * 512)) "$DISK" "$MNT"
cp -a /usr/share/locale "$MNT/"
echo "changed by the ferry demo at $STAMP" >> "$MNT/doc/README.ferry-demo"
umount "$MNT"

step "capture v2, incremental (parent v1)"
"$FERRY" capture "$DISK" --name "demo-$STAMP-v2" --parent "demo-$STAMP-v1" --json > "$WORK/v2.json"

step "restore both versions and check them"
for v in v1 v2; do
  "$FERRY" restore "demo-$STAMP-$v" "$WORK/restored-$v.img" --json > "$WORK/restore-$v.json"
done
cmp "$WORK/v1.img" "$WORK/restored-v1.img" && echo "  v1: byte-identical" >&2
cmp "$DISK" "$WORK/restored-v2.img" && echo "  v2: byte-identical" >&2
for v in v1 v2; do
  LOOP=$(losetup -f --show -o $((2048 * 512)) "$WORK/restored-$v.img")
  e2fsck -fn "$LOOP" >/dev/null && echo "  $v: e2fsck clean" >&2
  losetup -d "$LOOP"; LOOP=
done

step "re-restore v2 over v1 (seeding: only changed chunks are written)"
"$FERRY" restore "demo-$STAMP-v2" "$WORK/restored-v1.img" --json > "$WORK/reseed.json"
cmp "$DISK" "$WORK/restored-v1.img" && echo "  v1 -> v2 in place: byte-identical" >&2

step "migrate it as a server: capture --disk (used blocks only), then deploy onto a smaller and a bigger disk"
"$FERRY" capture --disk "$DISK" --name "demo-$STAMP-server" --json > "$WORK/server.json"
for size in 1G 4G; do
  truncate -s $size "$WORK/target-$size.img"
  "$FERRY" plan "demo-$STAMP-server" --target "$WORK/target-$size.img" >&2
  "$FERRY" deploy "demo-$STAMP-server" --target "$WORK/target-$size.img" --json > "$WORK/deploy-$size.json"
  LOOP=$(losetup -f --show -o $((2048 * 512)) "$WORK/target-$size.img")
  e2fsck -fn "$LOOP" >/dev/null && echo "  $size target: e2fsck clean" >&2
  losetup -d "$LOOP"; LOOP=
  "$FERRY" survey --disks "$WORK/target-$size.img" >&2
done

step "verify the whole library"
"$FERRY" image verify

step "summary"
python3 - "$WORK" <<'PY'
import json, sys
w = sys.argv[1]
ld = lambda n: json.load(open(f"{w}/{n}.json"))
v1, v2, r1, r2, rs = ld("v1"), ld("v2"), ld("restore-v1"), ld("restore-v2"), ld("reseed")
mb = lambda n: f"{n/1e6:8.1f} MB"
s1, s2 = v1["stats"], v2["stats"]
print(f"disk size                {mb(v1['disks'][0]['size'])}")
print(f"v1 data read             {mb(s1['bytes_read'])}   stored {mb(s1['stored_new'])}  ({s1['bytes_read']/max(s1['stored_new'],1):.2f}x smaller)  in {s1['seconds']:.1f} s, {s1['bytes_read']/s1['seconds']/1e6:.0f} MB/s")
print(f"v2 data read             {mb(s2['bytes_read'])}   stored {mb(s2['stored_new'])}  (new chunks only: {s2['chunks_new']} of {s2['chunks']})  in {s2['seconds']:.1f} s")
for name, r in (("restore v1", r1), ("restore v2", r2)):
    print(f"{name:<24} {mb(r['bytes_written'])} written, {r['bytes_holes']/1e6:.0f} MB holes kept sparse, in {r['seconds']:.1f} s, {r['bytes_written']/r['seconds']/1e6:.0f} MB/s")
print(f"v2 over v1 in place      {mb(rs['bytes_written'])} written, {mb(rs['bytes_seeded'])} already in place")
sv = ld("server")
p1 = sv["disks"][0]["content"]["partitions"][0]["content"]
print(f"server capture           {mb(sv['stats']['bytes_read'])} read (used blocks of a {sv['disks'][0]['size']/2**30:.0f} GiB disk), {mb(p1['stream']['unused_bytes'])} free not read, in {sv['stats']['seconds']:.1f} s")
for size in ("1G", "4G"):
    d = ld(f"deploy-{size}")
    p = d["disks"][0]["partitions"][0]
    how = "file tree into a fresh ext4" if p["method"]["method"] == "tree" else "blocks, then grown"
    print(f"deploy onto {size:<12} {how}: {mb(p['bytes_written'])} written, fsck clean, in {d['seconds']:.1f} s")
PY
echo >&2
"$FERRY" image ls
