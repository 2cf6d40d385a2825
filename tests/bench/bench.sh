#!/usr/bin/env bash
# bench.sh — ferry's capture/restore benchmark on a real Debian disk image.
#
# Measures, on the fixture from tests/fixtures/debian-disk.sh (a 2 GiB sparse
# bookworm server disk, debian.img, and debian-v2.img = debian.img + vim), the
# wall time, CPU time (user + sys), peak RSS (/usr/bin/time %M) and stored
# bytes of:
#
#   cp cold / warm   cp --sparse=always debian.img X && sync -f X: the physical
#                    limit every other step is compared against (cold = page
#                    cache dropped first, as before every step; warm = the
#                    image already cached)
#   ferry capture    $FERRY capture debian.img --library L --name v1
#   ferry restore    $FERRY restore v1 OUT.img --library L  (must cmp equal)
#   ferry zstd       the same capture and restore into a library created with
#                    --compression zstd:$FERRY_BENCH_ZSTD (LZ4 is the default)
#   ferry incr       $FERRY capture debian-v2.img --library L --name v2 --parent v1
#                    stored = growth of du -sb L, against debian-v2.changed-bytes
#   casync make/extract/make v2 on the same images, store size by du -sb
#                    (casync compresses every chunk with zstd level 3; its
#                    du -sb counts one directory per chunk-id prefix as well)
#   file trees     tar -c / -x, ferry --files capture, restore, re-capture (cold),
#                  a zstd capture (stored bytes), casync catar
#   net            tests/bench/net.sh: restore local, over loopback HTTPS, over
#                  100 Mbit/s + 50 ms between namespaces, 8 concurrent (server RSS)
#   server images  ferry capture --disk of debian.img (LZ4, and zstd); deploy of it onto 2 GiB
#                  (equal), 4 GiB (grow) and 1.5 GiB (file tree) image files; the
#                  Debian tree on a 1.2 GiB and a 16 GiB disk captured --disk
#
# Every step that writes is followed by `sync -f` on what it wrote, inside the
# timing, so page-cache writeback is counted for every tool alike.
#
# Then checks the targets: ferry capture <= 2x cp, restore <= 1.5x cp, stored
# <= casync's stored, incremental stored <= 1.3x changed bytes, peak RSS
# <= 300 MB. It is a report: exit 0 even when a target fails; non-zero when a
# command fails or a restore is not byte-identical.
#
# Usage: sudo tests/bench/bench.sh [--only-baselines]
#   --only-baselines   run only cp and casync (no ferry binary needed)
# Environment:
#   FERRY              ferry binary (default target/release/ferry)
#   FERRY_BENCH_DIR    work dir, wiped at start (default /var/tmp/ferry-bench)
#   FERRY_CACHE        passed on to the fixture script
#   FERRY_BENCH_ZSTD   zstd level of the zstd rows (default 1: at 3 and above,
#                      capture takes more CPU than 2 x cp's time on two cores)
#
# Adding a section: write a section_NAME function that calls
# `measure STEP [--warm] [--sync PATH] -- cmd...` and `record_stored STEP BYTES`,
# append NAME to SECTIONS, and add targets to report() if it has any.
set -Eeuo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
FIXTURE_SCRIPT=$REPO/tests/fixtures/debian-disk.sh
FERRY=${FERRY:-target/release/ferry}
WORK=${FERRY_BENCH_DIR:-/var/tmp/ferry-bench}
RESULTS=$WORK/results.tsv # step <TAB> seconds <TAB> peak RSS KiB <TAB> CPU seconds
STORED=$WORK/stored.tsv   # step <TAB> stored bytes
LOGS=$WORK/logs
ONLY_BASELINES=0
ZSTD_LEVEL=${FERRY_BENCH_ZSTD:-1}

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}
on_err() { log "ERROR: command failed (exit $1) at line $2: $3"; }
trap 'on_err "$?" "$LINENO" "$BASH_COMMAND"' ERR

usage() { sed -n '2,/^set -E/{/^set -E/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

# ---------------------------------------------------------------- helpers ---
drop_caches() {
	sync
	if ! echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then
		[[ -n ${WARNED_DROP:-} ]] || log "warning: cannot drop caches; 'cold' runs may be warm"
		WARNED_DROP=1
	fi
}

# measure STEP [--warm] [--sync PATH] -- cmd...
# Runs cmd (output to $LOGS/STEP.log) after dropping the page cache (unless
# --warm), then sync -f PATH if given; records wall seconds, peak RSS (KiB)
# and the command's CPU seconds (user + sys: steadier than wall time when
# other work shares the machine).
measure() {
	local step=$1 warm=0 sync_path="" t0 t1 secs rss cpu
	shift
	while [[ $# -gt 0 && $1 != -- ]]; do
		case $1 in
		--warm) warm=1 ;;
		--sync)
			sync_path=$2
			shift
			;;
		*) die "measure: unknown option $1" ;;
		esac
		shift
	done
	[[ ${1:-} == -- ]] || die "measure $step: missing -- before the command"
	shift
	((warm)) || drop_caches
	log "$step: $*"
	t0=$(date +%s%N)
	if ! /usr/bin/time -f '%M %U %S' -o "$WORK/.rss" "$@" >"$LOGS/$step.log" 2>&1; then
		tail -n 20 "$LOGS/$step.log" >&2 || true
		die "$step failed: $* (log: $LOGS/$step.log)"
	fi
	[[ -z $sync_path ]] || sync -f "$sync_path"
	t1=$(date +%s%N)
	secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", (b - a) / 1e9 }')
	read -r rss cpu < <(tail -n 1 "$WORK/.rss" | awk '{ printf "%s %.2f\n", $1, $2 + $3 }')
	[[ $rss =~ ^[0-9]+$ ]] || rss=""
	printf '%s\t%s\t%s\t%s\n' "$step" "$secs" "$rss" "$cpu" >>"$RESULTS"
	log "$step: ${secs} s, ${cpu} s CPU, peak RSS ${rss:-?} KiB"
}

record_stored() { printf '%s\t%s\n' "$1" "$2" >>"$STORED"; }

size_b() { du -sb "$@" | awk '{ s += $1 } END { print s + 0 }'; }

same_or_die() {
	local a=$1 b=$2
	log "cmp $a $b"
	cmp "$a" "$b" >&2 || die "$b is not byte-identical to $a"
}

# Field of a results file for a step ("" if absent).
get() { awk -F'\t' -v s="$2" -v c="$3" '$1 == s { v = $c } END { print v }' "$1"; }
secs_of() { get "$RESULTS" "$1" 2; }
rss_of() { get "$RESULTS" "$1" 3; }
cpu_of() { get "$RESULTS" "$1" 4; }
stored_of() { get "$STORED" "$1" 2; }

# ---------------------------------------------------------------- sections ---
SECTIONS=(cp ferry casync tree server net)

section_cp() {
	measure cp_cold --sync "$WORK/cp.img" -- cp --sparse=always "$IMG" "$WORK/cp.img"
	rm -f "$WORK/cp.img"
	measure cp_warm --warm --sync "$WORK/cp.img" -- cp --sparse=always "$IMG" "$WORK/cp.img"
	rm -f "$WORK/cp.img"
}

section_ferry() {
	if ((ONLY_BASELINES)); then
		log "ferry: skipped (--only-baselines)"
		return
	fi
	local lib=$WORK/library before after
	measure ferry_capture --sync "$WORK" -- "$FERRY" capture "$IMG" --library "$lib" --name v1
	sync
	record_stored ferry_capture "$(size_b "$lib")"

	measure ferry_restore --sync "$WORK/ferry-out.img" -- "$FERRY" restore v1 "$WORK/ferry-out.img" --library "$lib"
	same_or_die "$IMG" "$WORK/ferry-out.img"
	rm -f "$WORK/ferry-out.img"

	# The same into a library created with zstd (a library's compression is
	# fixed when it is created).
	local zlib=$WORK/library-zstd
	measure ferry_zstd_capture --sync "$WORK" -- "$FERRY" capture "$IMG" --library "$zlib" --name v1 --compression "zstd:$ZSTD_LEVEL"
	sync
	record_stored ferry_zstd_capture "$(size_b "$zlib")"
	measure ferry_zstd_restore --sync "$WORK/ferry-out.img" -- "$FERRY" restore v1 "$WORK/ferry-out.img" --library "$zlib"
	same_or_die "$IMG" "$WORK/ferry-out.img"
	rm -rf "$WORK/ferry-out.img" "$zlib"

	before=$(size_b "$lib")
	measure ferry_incr --sync "$WORK" -- "$FERRY" capture "$IMG2" --library "$lib" --name v2 --parent v1
	sync
	if after=$(size_b "$lib") && [[ -n $after ]]; then
		record_stored ferry_incr "$((after - before))"
	else
		# Fallback: ask ferry (field name not fixed yet: take the first that fits).
		"$FERRY" image show v2 --library "$lib" --json >"$LOGS/ferry_image_show.json"
		record_stored ferry_incr "$(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
for k in ("stored_bytes", "new_bytes", "added_bytes", "stored"):
    if isinstance(d.get(k), int):
        print(d[k]); break
else:
    sys.exit("no stored-bytes field in ferry image show --json")' "$LOGS/ferry_image_show.json")"
	fi
}

section_casync() {
	local store=$WORK/casync.store before
	measure casync_make --sync "$WORK" -- casync make --store="$store" "$WORK/v1.caibx" "$IMG"
	sync
	# Stored = chunk store + index, as a restore needs both. du -sb also
	# counts the store's directories (one per 4-hex-digit id prefix, 4 KiB
	# each): casync_make_files is the bytes of its files alone.
	record_stored casync_make "$(size_b "$store" "$WORK/v1.caibx")"
	record_stored casync_make_files "$(find "$store" "$WORK/v1.caibx" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')"

	measure casync_extract --sync "$WORK/casync-out.img" -- casync extract --store="$store" "$WORK/v1.caibx" "$WORK/casync-out.img"
	same_or_die "$IMG" "$WORK/casync-out.img"
	rm -f "$WORK/casync-out.img"

	before=$(size_b "$store")
	measure casync_incr --sync "$WORK" -- casync make --store="$store" "$WORK/v2.caibx" "$IMG2"
	sync
	record_stored casync_incr "$(($(size_b "$store") - before + $(size_b "$WORK/v2.caibx")))"
}

# File trees (issue 3): the Debian root tree, against GNU tar and casync's catar.
section_tree() {
	local tree=$WORK/tree lib=$WORK/tree-library store=$WORK/tree-casync.store
	local xa=(--xattrs --xattrs-include='*' --acls --numeric-owner)
	log "extracting the Debian tree into $tree"
	mkdir -p "$tree"
	tar "${xa[@]}" -I zstd -xpf "$FIX/rootfs.tar.zst" -C "$tree"
	sync

	measure tar_create --sync "$WORK/tree.tar" -- tar "${xa[@]}" -cf "$WORK/tree.tar" -C "$tree" .
	record_stored tar_create "$(size_b "$WORK/tree.tar")"
	mkdir -p "$WORK/tar-out"
	measure tar_extract --sync "$WORK/tar-out" -- tar "${xa[@]}" -xpf "$WORK/tree.tar" -C "$WORK/tar-out"
	rm -rf "$WORK/tar-out" "$WORK/tree.tar"

	if ((!ONLY_BASELINES)); then
		measure ferry_tree_capture --sync "$WORK" -- "$FERRY" capture "$tree" --files --library "$lib" --name t1
		sync
		record_stored ferry_tree_capture "$(size_b "$lib")"
		measure ferry_tree_restore --sync "$WORK/ferry-tree-out" -- "$FERRY" restore t1 "$WORK/ferry-tree-out" --library "$lib"
		local diff
		diff=$(rsync -aHAXn --numeric-ids --itemize-changes "$tree/" "$WORK/ferry-tree-out/")
		[[ -z $diff ]] || die "ferry's restored tree differs from the source:"$'\n'"$diff"
		log "ferry tree restore: rsync -aHAX finds no difference"
		rm -rf "$WORK/ferry-tree-out"
		measure ferry_tree_recapture --sync "$WORK" -- "$FERRY" capture "$tree" --files --library "$lib" --name t2 --parent t1
		measure ferry_tree_zstd_capture --sync "$WORK" -- "$FERRY" capture "$tree" --files --library "$lib-zstd" --name t1 --compression "zstd:$ZSTD_LEVEL"
		sync
		record_stored ferry_tree_zstd_capture "$(size_b "$lib-zstd")"
		rm -rf "$lib-zstd"
	fi

	measure casync_tree_make --sync "$WORK" -- casync make --store="$store" "$WORK/tree.caidx" "$tree"
	sync
	record_stored casync_tree_make "$(size_b "$store" "$WORK/tree.caidx")"
	measure casync_tree_extract --sync "$WORK/casync-tree-out" -- casync extract --store="$store" "$WORK/tree.caidx" "$WORK/casync-tree-out"
	rm -rf "$WORK/casync-tree-out"
}

# Server images (issue 4): the Debian disk captured per partition (used
# blocks only), and the same ~0.9 GB of data on a 1.2 GiB and on a 16 GiB
# disk, each captured into a library of its own.
section_server() {
	local tree=$WORK/tree
	((ONLY_BASELINES)) && return
	measure ferry_disk_capture --sync "$WORK" -- "$FERRY" capture --disk "$IMG" --library "$WORK/disk-library" --name s1
	sync
	record_stored ferry_disk_capture "$(size_b "$WORK/disk-library")"
	measure ferry_disk_zstd --sync "$WORK" -- "$FERRY" capture --disk "$IMG" --library "$WORK/disk-library-zstd" --name s1 --compression "zstd:$ZSTD_LEVEL"
	sync
	record_stored ferry_disk_zstd "$(size_b "$WORK/disk-library-zstd")"
	rm -rf "$WORK/disk-library-zstd"
	local size
	# Deploy of each plan of layout (a): equal, bigger (block + grow) and
	# smaller (file tree into a fresh ext4).
	for size in 2G 4G 1536M; do
		truncate -s "$size" "$WORK/deploy-$size.img"
		measure "ferry_deploy_$size" --sync "$WORK/deploy-$size.img" -- "$FERRY" deploy s1 --target "$WORK/deploy-$size.img" --library "$WORK/disk-library"
		rm -f "$WORK/deploy-$size.img"
	done
	for size in 1200M 16G; do
		local img=$WORK/data-$size.img
		log "building $img: the Debian tree on a $size disk"
		truncate -s "$size" "$img"
		echo 'start=2048, type=83' | sfdisk -q "$img"
		local kib=$(($(stat -c %s "$img") / 1024 - 1024))
		mke2fs -q -F -t ext4 -E offset=1048576 -d "$tree" "$img" "${kib}k"
		measure "ferry_disk_$size" --sync "$WORK" -- "$FERRY" capture --disk "$img" --library "$WORK/lib-$size" --name d
		rm -rf "$WORK/lib-$size"
	done
	rm -rf "$tree" "$WORK"/data-*.img
}

# ------------------------------------------------------------------ report ---
# PASS/FAIL/SKIP line: target NAME VALUE OP LIMIT (VALUE "" = not measured).
target() {
	local name=$1 value=$2 op=$3 limit=$4 verdict
	if [[ -z $value || -z $limit ]]; then
		verdict=SKIP
	elif awk -v v="$value" -v l="$limit" -v op="$op" 'BEGIN { exit !(op == "<=" ? v <= l : v < l) }'; then
		verdict=PASS
	else
		verdict=FAIL
	fi
	printf '  %-4s  %-48s %s %s %s\n' "$verdict" "$name" "${value:-n/a}" "$op" "${limit:-n/a}"
}

# Arithmetic on possibly-missing values: print nothing when an input is empty.
mul() { if [[ -n $1 && -n $2 ]]; then awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a * b }'; fi; }
div() { if [[ -n $1 && -n $2 && $2 != 0 ]]; then awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; fi; }
mb() { if [[ -n $1 ]]; then awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; fi; }

# Libraries over the network (issue 7): tests/bench/net.sh on the same image
# (local, loopback HTTPS, 100 Mbit/s 50 ms between namespaces, 8 concurrent
# restores); its report is appended to ours.
section_net() {
	((ONLY_BASELINES)) && return 0
	log "net: tests/bench/net.sh"
	if ! FERRY=$FERRY "$REPO/tests/bench/net.sh" "$IMG" "$WORK/net" 2>"$LOGS/net.log"; then
		log "net.sh failed; see $LOGS/net.log"
		echo "net.sh failed (see $LOGS/net.log)" >"$WORK/net/net-report.txt"
	fi
}

report() {
	local cp step secs rss stored ratio changed max_rss="" r
	cp=$(secs_of cp_cold)
	changed=$(cat "$FIX/debian-v2.changed-bytes")
	echo
	echo "ferry benchmark — $(date -Is)"
	echo "host: $(nproc) cpus, kernel $(uname -r); work dir $WORK ($(df -T "$WORK" | awk 'NR == 2 { print $2 }'))"
	echo "fixture: $FIX"
	echo "  debian.img     $(du -h --apparent-size "$IMG" | cut -f1) apparent, $(du -h "$IMG" | cut -f1) allocated"
	echo "  debian-v2.img  $(du -h --apparent-size "$IMG2" | cut -f1) apparent, $(du -h "$IMG2" | cut -f1) allocated; changed bytes (4 KiB blocks) $changed"
	((ONLY_BASELINES)) || echo "ferry: $FERRY ($("$FERRY" --version 2>/dev/null | head -n 1 || echo 'no --version'))"
	echo
	printf '%-20s %9s %12s %9s %13s %15s\n' step seconds "ratio vs cp" "CPU s" "peak RSS MB" "stored bytes"
	printf '%-20s %9s %12s %9s %13s %15s\n' ---- ------- ----------- ----- ----------- ------------
	while IFS=$'\t' read -r step secs rss cpu; do
		stored=$(stored_of "$step")
		ratio=$(div "$secs" "$cp")
		printf '%-20s %9s %12s %9s %13s %15s\n' "$step" "$secs" "${ratio:--}" "${cpu:--}" \
			"$(r=$(mb "$rss"); echo "${r:--}")" "${stored:--}"
	done <"$RESULTS"
	if [[ -n $(stored_of casync_make_files) ]]; then
		echo "casync make stored: $(stored_of casync_make) bytes by du -sb, $(stored_of casync_make_files) in files"
	fi
	echo
	if [[ -n $(stored_of casync_incr) ]]; then
		echo "casync incremental: $(stored_of casync_incr) bytes = $(div "$(stored_of casync_incr)" "$changed")x changed bytes"
	fi
	if [[ -n $(stored_of ferry_incr) ]]; then
		echo "ferry incremental:  $(stored_of ferry_incr) bytes = $(div "$(stored_of ferry_incr)" "$changed")x changed bytes"
	fi
	if [[ -n $(secs_of ferry_capture) && -n $(secs_of casync_make) ]]; then
		echo
		echo "ferry against casync (casync / ferry; above 1 means ferry is better):"
		echo "  capture time   $(div "$(secs_of casync_make)" "$(secs_of ferry_capture)")x"
		echo "  restore time   $(div "$(secs_of casync_extract)" "$(secs_of ferry_restore)")x"
		echo "  incremental    $(div "$(secs_of casync_incr)" "$(secs_of ferry_incr)")x time, $(div "$(stored_of casync_incr)" "$(stored_of ferry_incr)")x stored"
		echo "  stored bytes   $(div "$(stored_of casync_make)" "$(stored_of ferry_capture)")x (LZ4 against casync's zstd)"
		echo "  stored bytes   $(div "$(stored_of casync_make)" "$(stored_of ferry_zstd_capture)")x (zstd:$ZSTD_LEVEL against casync's zstd:3)"
	fi
	for step in ferry_capture ferry_restore ferry_zstd_capture ferry_zstd_restore ferry_tree_capture ferry_tree_zstd_capture ferry_incr ferry_disk_capture ferry_disk_16G ferry_deploy_2G ferry_deploy_4G ferry_deploy_1536M; do
		r=$(rss_of "$step")
		[[ -z $r ]] || max_rss=$(awk -v a="${max_rss:-0}" -v b="$r" 'BEGIN { print (b > a ? b : a) }')
	done
	echo
	echo "targets:"
	target "ferry capture time (s) <= 2 x cp" "$(secs_of ferry_capture)" "<=" "$(mul "$cp" 2)"
	target "ferry restore time (s) <= 1.5 x cp" "$(secs_of ferry_restore)" "<=" "$(mul "$cp" 1.5)"
	target "ferry stored (bytes) <= casync stored" "$(stored_of ferry_capture)" "<=" "$(stored_of casync_make)"
	target "zstd:$ZSTD_LEVEL capture time (s) <= 2 x cp" "$(secs_of ferry_zstd_capture)" "<=" "$(mul "$cp" 2)"
	target "zstd:$ZSTD_LEVEL restore time (s) <= 1.5 x cp" "$(secs_of ferry_zstd_restore)" "<=" "$(mul "$cp" 1.5)"
	target "zstd:$ZSTD_LEVEL stored (bytes) <= casync stored" "$(stored_of ferry_zstd_capture)" "<=" "$(stored_of casync_make)"
	target "zstd:$ZSTD_LEVEL stored <= casync's files alone" "$(stored_of ferry_zstd_capture)" "<=" "$(stored_of casync_make_files)"
	target "ferry incremental stored <= 1.3 x changed" "$(stored_of ferry_incr)" "<=" \
		"$(awk -v c="$changed" 'BEGIN { printf "%d", c * 1.3 }')"
	target "ferry peak RSS (MB) <= 300" \
		"$(mb "$max_rss")" "<=" 300
	echo
	echo "file-tree targets (Debian root tree):"
	target "tree capture (s) <= tar -c" "$(secs_of ferry_tree_capture)" "<=" "$(secs_of tar_create)"
	target "tree restore (s) <= 1/3 casync extract" "$(secs_of ferry_tree_restore)" "<=" \
		"$(div "$(secs_of casync_tree_extract)" 3)"
	target "tree restore (s) <= 1.2 x tar -x" "$(secs_of ferry_tree_restore)" "<=" "$(mul "$(secs_of tar_extract)" 1.2)"
	target "tree re-capture (s) <= 10% of capture" "$(secs_of ferry_tree_recapture)" "<=" \
		"$(mul "$(secs_of ferry_tree_capture)" 0.1)"
	target "tree stored (bytes) <= casync catar store" "$(stored_of ferry_tree_capture)" "<=" "$(stored_of casync_tree_make)"
	target "tree zstd:$ZSTD_LEVEL capture (s) <= tar -c" "$(secs_of ferry_tree_zstd_capture)" "<=" "$(secs_of tar_create)"
	target "tree zstd:$ZSTD_LEVEL stored <= casync catar store" "$(stored_of ferry_tree_zstd_capture)" "<=" "$(stored_of casync_tree_make)"
	echo
	echo "server-image targets (issue 4):"
	target "disk capture --disk (s) <= 1.0 x cp" "$(secs_of ferry_disk_capture)" "<=" "$cp"
	target "16 GiB disk (s) <= 1.3 x 1.2 GiB disk" "$(secs_of ferry_disk_16G)" "<=" "$(mul "$(secs_of ferry_disk_1200M)" 1.3)"
	target "disk capture stored <= casync stored" "$(stored_of ferry_disk_capture)" "<=" "$(stored_of casync_make)"
	target "disk capture zstd:$ZSTD_LEVEL stored <= casync stored" "$(stored_of ferry_disk_zstd)" "<=" "$(stored_of casync_make)"
	if [[ -f $WORK/net/net-report.txt ]]; then
		echo
		echo "library over the network (issue 7; targets: loopback >= 70 % of local, >= 90 % of link rate, server RSS <= 150 MB):"
		sed 's/^/  /' "$WORK/net/net-report.txt"
	fi
	((ONLY_BASELINES)) && echo "(ferry steps skipped: --only-baselines)"
	true
}

# -------------------------------------------------------------------- main ---
main() {
	while [[ $# -gt 0 ]]; do
		case $1 in
		--only-baselines) ONLY_BASELINES=1 ;;
		-h | --help)
			usage
			exit 0
			;;
		*) die "unknown argument: $1 (see --help)" ;;
		esac
		shift
	done
	[[ $EUID -eq 0 ]] || die "must run as root (fixture build, drop_caches)"
	[[ -x /usr/bin/time ]] || die "/usr/bin/time not found (apt-get install time)"
	command -v casync >/dev/null || die "casync not found (apt-get install casync)"
	if ((!ONLY_BASELINES)); then
		[[ $FERRY == /* || -x $FERRY ]] || FERRY=$REPO/$FERRY
		[[ -x $FERRY ]] || die "ferry binary '$FERRY' not found: build it (cargo build --release), set FERRY, or pass --only-baselines"
		FERRY=$(readlink -f "$FERRY")
	fi

	log "fixture: $FIXTURE_SCRIPT"
	FIX=$("$FIXTURE_SCRIPT" | tail -n 1)
	IMG=$FIX/debian.img
	IMG2=$FIX/debian-v2.img
	[[ -f $IMG && -f $IMG2 && -f $FIX/debian-v2.changed-bytes ]] || die "fixture incomplete in '$FIX'"

	case $(readlink -m "$WORK") in
	/ | /var | /var/tmp | /tmp | /root | /home | "$REPO") die "refusing to wipe FERRY_BENCH_DIR=$WORK" ;;
	esac
	log "work dir $WORK (wiped)"
	rm -rf --one-file-system "$WORK"
	mkdir -p "$LOGS"
	: >"$RESULTS"
	: >"$STORED"

	local s
	for s in "${SECTIONS[@]}"; do
		"section_$s"
	done
	report | tee "$WORK/report.txt"
}

main "$@"
