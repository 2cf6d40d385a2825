#!/usr/bin/env bash
# net.sh — ferry restores over the network (issue 7), on bench.sh's Debian
# disk image. Called by bench.sh (section "net"); runs on its own too:
#
#   sudo tests/bench/net.sh IMG WORK
#
# Captures IMG into a local library in WORK, then restores it (each restore
# cmp'ed against IMG) and reports MB/s (image bytes per second):
#   (a) local          ferry restore --library DIR
#   (b) loopback       over HTTPS on 127.0.0.1 (manager's library routes,
#                      target/release/examples/library_server)
#   (c) 100mbit/50ms   between two network namespaces made here, over a
#                      veth pair with netem delay 25ms rate 100mbit limit
#                      1000 on each side or, on a kernel without sch_netem,
#                      over ferry-link (tests/src/bin/ferry-link.rs: a
#                      userspace emulator of that same netem link between a
#                      TUN device in each namespace); % of link rate =
#                      fetched bytes / seconds / 12.5 MB/s. Also the link's
#                      ping RTT and, for reference, one plain TCP stream's
#                      throughput through it (NET_RAW_MB, default 100 MB).
#   (d) 8 concurrent   restores over loopback; the server's peak RSS (VmHWM)
# Targets: (c) >= 90 % of link rate, (b) >= 70 % of (a), (d) RSS <= 150 MB.
# (a) and (b) alternate NET_ROUNDS times (default 3), each from a cold page
# cache; the report gives the median pipeline time (the restore's own
# figure) and the median command time (`ferry restore` from start to exit,
# the target fsynced), each as a % of local.
# Environment: FERRY, LIBRARY_SERVER, FERRY_LINK (binaries), NET_CLIENTS
# (default 8), NET_RAW_MB, NET_ROUNDS, NET_SKIP_NETNS=1 to leave out (c).
set -Eeuo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
IMG=${1:?usage: net.sh IMG WORK}
WORK=${2:?usage: net.sh IMG WORK}
FERRY=${FERRY:-$REPO/target/release/ferry}
SERVER=${LIBRARY_SERVER:-$REPO/target/release/examples/library_server}
FERRY_LINK=${FERRY_LINK:-$REPO/target/release/ferry-link}
CLIENTS=${NET_CLIENTS:-8}
RAW_MB=${NET_RAW_MB:-100}
NS_S=ferry-bench-srv NS_C=ferry-bench-cli
log() { printf '[net %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[[ -x $FERRY ]] || die "no ferry binary at $FERRY"
[[ -x $SERVER ]] || die "no library_server at $SERVER (cargo build --release -p manager --examples)"

# have_netem: whether this kernel has sch_netem (tried in a scratch namespace).
have_netem() {
	local ns=ferry-bench-probe ok=1
	ip netns del "$ns" 2>/dev/null || true
	ip netns add "$ns"
	ip -n "$ns" link set lo up
	ip netns exec "$ns" tc qdisc add dev lo root netem delay 1ms 2>/dev/null || ok=0
	ip netns del "$ns"
	((ok))
}
NETEM=0
if [[ ${NET_SKIP_NETNS:-0} != 1 ]]; then
	if have_netem; then NETEM=1; else
		[[ -x $FERRY_LINK ]] || die "this kernel has no sch_netem and there is no ferry-link at $FERRY_LINK to emulate the link with (cargo build --release -p ferry-tests --bin ferry-link, or set FERRY_LINK)"
	fi
fi

PIDS=()
cleanup() {
	local p
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	ip netns del "$NS_S" 2>/dev/null || true
	ip netns del "$NS_C" 2>/dev/null || true
}
trap cleanup EXIT

mkdir -p "$WORK"
LIB=$WORK/net-library OUT=$WORK/net-out.img REPORT=$WORK/net-report.txt
rm -rf "$LIB" "$OUT"*
: >"$REPORT"
size=$(stat -c %s "$IMG")
log "capturing $IMG into $LIB"
"$FERRY" capture "$IMG" --library "$LIB" --name v1 >/dev/null 2>&1

# restore_json OUTFILE LIBRARY [ns]: prints the restore's JSON stats.
restore_json() {
	local out=$1 lib=$2 ns=${3:-}
	rm -f "$out"
	if [[ -n $ns ]]; then
		ip netns exec "$ns" env FERRY_CA="$WORK/ca.pem" "$FERRY" restore v1 "$out" --library "$lib" --json 2>>"$WORK/restore.log"
	else
		FERRY_CA="$WORK/ca.pem" "$FERRY" restore v1 "$out" --library "$lib" --json 2>>"$WORK/restore.log"
	fi
}
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
mbs() { python3 -c "print(f'{$1/$2/1e6:.1f}')"; }
pct() { python3 -c "print(f'{100*$1/$2:.0f}')"; }
linkpct() { python3 -c "print(f'{100*$1/$2/12.5e6:.1f}')"; } # BYTES SECONDS: % of 100 Mbit/s
check() { cmp -s "$IMG" "$OUT" || die "restore $1 is not byte-identical"; }

start_server() { # ADDR [ns] -> sets SERVER_PID
	local addr=$1 ns=${2:-}
	rm -f "$WORK/ca.pem" "$WORK/url"
	if [[ -n $ns ]]; then
		ip netns exec "$ns" "$SERVER" "$LIB" "$addr" "$WORK/ca.pem" >"$WORK/url" 2>"$WORK/server.log" &
	else
		"$SERVER" "$LIB" "$addr" "$WORK/ca.pem" >"$WORK/url" 2>"$WORK/server.log" &
	fi
	SERVER_PID=$!
	PIDS+=("$SERVER_PID")
	for _ in $(seq 100); do [[ -s $WORK/url ]] && break; sleep 0.1; done
	[[ -s $WORK/url ]] || die "library_server did not start: $(cat "$WORK/server.log")"
	URL=$(cat "$WORK/url")
}

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }
# timed_restore LIBRARY NAME: one cold-cache restore; appends "PIPELINE
# COMMAND CONCURRENCY" to $WORK/NAME.times. PIPELINE is the restore's own
# figure (fetch, verify, write); COMMAND is the whole `ferry restore` as a
# user waits for it (open the library, restore, fsync the target).
timed_restore() {
	local lib=$1 name=$2 j t0 t1
	rm -f "$OUT"
	drop_caches
	t0=$(date +%s.%N)
	j=$(restore_json "$OUT" "$lib")
	t1=$(date +%s.%N)
	check "$name"
	echo "$(field seconds <<<"$j") $(python3 -c "print($t1 - $t0)") $(field read_concurrency <<<"$j")" >>"$WORK/$name.times"
}
# median NAME COLUMN: the median of a column of $WORK/NAME.times.
median() { sort -g -k"$2" "$WORK/$1.times" | awk -v c="$2" '{v[NR]=$c} END {print v[int((NR+1)/2)]}'; }
f2() { printf %.2f "$1"; }

# (a) and (b) alternate, ROUNDS times each (default 3), so drift in the
# machine's speed touches both alike; the report gives medians.
ROUNDS=${NET_ROUNDS:-3}
fetched=$(restore_json "$OUT" "$LIB" | field bytes_fetched)
start_server 127.0.0.1:0
rm -f "$WORK/local.times" "$WORK/loopback.times"
for r in $(seq "$ROUNDS"); do
	log "(a) local restore, round $r of $ROUNDS"
	timed_restore "$LIB" local
	log "(b) loopback HTTPS restore, round $r of $ROUNDS"
	timed_restore "$URL" loopback
done
la=$(median local 1) lc=$(median local 2) ba=$(median loopback 1) bc=$(median loopback 2)
echo "local      pipeline $(f2 "$la")s ($(mbs "$size" "$la") MB/s), command $(f2 "$lc")s  fetched $fetched bytes  (medians of $ROUNDS)" | tee -a "$REPORT"
echo "loopback   pipeline $(f2 "$ba")s ($(mbs "$size" "$ba") MB/s) = $(pct "$la" "$ba") % of local; command $(f2 "$bc")s = $(pct "$lc" "$bc") % of local (target >= 70)  concurrency $(median loopback 3)" | tee -a "$REPORT"

log "(d) $CLIENTS concurrent restores over loopback"
pids=()
for i in $(seq "$CLIENTS"); do
	(FERRY_CA="$WORK/ca.pem" "$FERRY" restore v1 "$OUT.$i" --library "$URL" --json >"$WORK/c$i.json" 2>>"$WORK/restore.log" && cmp -s "$IMG" "$OUT.$i" && rm -f "$OUT.$i") &
	pids+=($!)
done
fail=0
for p in "${pids[@]}"; do wait "$p" || fail=1; done
((fail == 0)) || die "a concurrent restore failed or differs"
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$SERVER_PID/status")
echo "concurrent $CLIENTS restores: server peak RSS $((hwm / 1024)) MB (target <= 150)" | tee -a "$REPORT"
kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true

if [[ ${NET_SKIP_NETNS:-0} == 1 ]]; then
	log "(c) skipped (NET_SKIP_NETNS=1)"
	cat "$REPORT"; exit 0
fi
log "(c) 100 Mbit/s, 50 ms RTT between two namespaces"
ip netns del "$NS_S" 2>/dev/null || true
ip netns del "$NS_C" 2>/dev/null || true
ip netns add "$NS_S"; ip netns add "$NS_C"
for ns in "$NS_S" "$NS_C"; do
	ip -n "$ns" link set lo up
	# Each connection starts from scratch, not from the ssthresh and RTT
	# an earlier one (the raw stream, another restore) left in tcp_metrics.
	ip netns exec "$ns" sysctl -qw net.ipv4.tcp_no_metrics_save=1
done
LINK_PID=
if ((NETEM)); then
	ip link add fb-s netns "$NS_S" type veth peer name fb-c netns "$NS_C"
	ip -n "$NS_S" addr add 10.231.0.1/30 dev fb-s
	ip -n "$NS_C" addr add 10.231.0.2/30 dev fb-c
	ip -n "$NS_S" link set fb-s up; ip -n "$NS_C" link set fb-c up
	ip netns exec "$NS_S" tc qdisc add dev fb-s root netem delay 25ms rate 100mbit limit 1000
	ip netns exec "$NS_C" tc qdisc add dev fb-c root netem delay 25ms rate 100mbit limit 1000
	LINK="veth, netem delay 25ms rate 100mbit limit 1000 on each side"
else
	# No sch_netem: the namespaces are joined only by ferry-link, which
	# models the same link (per direction: 100 Mbit/s serialization of IP
	# length + 14 bytes, FIFO, 25 ms delay, drop-tail at 1000 packets).
	"$FERRY_LINK" --ns-a "$NS_S" --dev-a fl-s --ns-b "$NS_C" --dev-b fl-c \
		--rate 100mbit --delay 25ms --limit 1000 >"$WORK/link.out" 2>"$WORK/link.err" &
	LINK_PID=$!
	PIDS+=("$LINK_PID")
	for _ in $(seq 50); do grep -q ready "$WORK/link.out" 2>/dev/null && break; sleep 0.1; done
	grep -q ready "$WORK/link.out" || die "ferry-link did not start: $(cat "$WORK/link.err")"
	ip -n "$NS_S" addr add 10.231.0.1 peer 10.231.0.2 dev fl-s
	ip -n "$NS_C" addr add 10.231.0.2 peer 10.231.0.1 dev fl-c
	ip -n "$NS_S" link set fl-s up; ip -n "$NS_C" link set fl-c up
	LINK="ferry-link (TUN in each namespace; no sch_netem in this kernel): delay 25ms rate 100mbit limit 1000 each way"
fi
LINK="$LINK; TCP congestion control $(ip netns exec "$NS_S" sysctl -n net.ipv4.tcp_congestion_control)"
log "link: $LINK"
echo "link: $LINK" >>"$REPORT"
# What TCP can carry at best: 1448 payload bytes (MSS with timestamps) per
# 1514 bytes on the wire, before TLS records and HTTP.
echo "link: TCP payload ceiling 1448/1514 = 95.6 % of link rate" | tee -a "$REPORT"
# link_counters: ferry-link's counters so far (nothing under netem).
link_counters() {
	[[ -n $LINK_PID ]] || return 0
	local n
	n=$(wc -l <"$WORK/link.err")
	kill -USR2 "$LINK_PID"
	for _ in $(seq 20); do (($(wc -l <"$WORK/link.err") >= n + 2)) && break; sleep 0.1; done
	tail -n +$((n + 1)) "$WORK/link.err" | sed 's/^ferry-link so far: /  /'
}

rtt=$(ip netns exec "$NS_C" ping -n -q -c 5 -i 0.2 10.231.0.1 | sed -n 's|^rtt min/avg/max/mdev = \([^ ]*\) ms|\1|p')
[[ -n $rtt ]] || die "no ping reply from 10.231.0.1 through the link"
echo "ping       rtt min/avg/max/mdev $rtt ms (link: 50)" | tee -a "$REPORT"

start_server 10.231.0.1:8443 "$NS_S"
log "link: restore"
j=$(restore_json "$OUT" "$URL" "$NS_C")
check netns
s=$(field seconds <<<"$j")
f=$(field bytes_fetched <<<"$j")
rate=$(mbs "$f" "$s")
echo "100mbit/50ms ${s}s  fetched $f bytes at $rate MB/s = $(linkpct "$f" "$s") % of link rate (target >= 90)  image at $(mbs "$size" "$s") MB/s  concurrency $(field read_concurrency <<<"$j")" | tee -a "$REPORT"
link_counters | tee -a "$REPORT"

# One plain TCP stream through the same link, for reference: what the link
# itself carries, slow start included (the receiver times connect to EOF).
log "link: one TCP stream of $RAW_MB MB"
ip netns exec "$NS_S" python3 -c '
import socket, sys
srv = socket.create_server(("10.231.0.1", 8444))
print("ready", flush=True)
c, _ = srv.accept()
left, buf = int(sys.argv[1]) << 20, bytes(1 << 20)
while left > 0:
    left -= c.send(buf[: min(left, len(buf))])
c.shutdown(socket.SHUT_WR)
c.recv(1)
' "$RAW_MB" >"$WORK/raw.out" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do grep -q ready "$WORK/raw.out" 2>/dev/null && break; sleep 0.1; done
raw=$(ip netns exec "$NS_C" python3 -c '
import socket, time
t = time.monotonic()
c = socket.create_connection(("10.231.0.1", 8444))
n = 0
while b := c.recv(1 << 20):
    n += len(b)
print(n, time.monotonic() - t)
') || die "the plain TCP stream failed: $(cat "$WORK/raw.out")"
read -r raw_b raw_s <<<"$raw"
echo "one TCP stream $raw_b bytes in $(printf %.1f "$raw_s")s at $(mbs "$raw_b" "$raw_s") MB/s = $(linkpct "$raw_b" "$raw_s") % of link rate" | tee -a "$REPORT"
if [[ -n $LINK_PID ]]; then
	kill "$LINK_PID"
	wait "$LINK_PID" || true
	echo "ferry-link totals:" >>"$REPORT"
	grep '^ferry-link: ' "$WORK/link.err" | sed 's/^ferry-link: /  /' | tee -a "$REPORT"
fi
cat "$REPORT"
