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
#   (c) 100mbit/50ms   over a veth pair between two network namespaces made
#                      here, netem delay 25ms + rate 100mbit on each side;
#                      % of link rate = fetched bytes / seconds / 12.5 MB/s
#   (d) 8 concurrent   restores over loopback; the server's peak RSS (VmHWM)
# Targets: (c) >= 90 % of link rate, (b) >= 70 % of (a), (d) RSS <= 150 MB.
# Environment: FERRY, LIBRARY_SERVER (binaries), NET_CLIENTS (default 8),
# NET_SKIP_NETNS=1 to leave out (c).
set -Eeuo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
IMG=${1:?usage: net.sh IMG WORK}
WORK=${2:?usage: net.sh IMG WORK}
FERRY=${FERRY:-$REPO/target/release/ferry}
SERVER=${LIBRARY_SERVER:-$REPO/target/release/examples/library_server}
CLIENTS=${NET_CLIENTS:-8}
NS_S=ferry-bench-srv NS_C=ferry-bench-cli
log() { printf '[net %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[[ -x $FERRY ]] || die "no ferry binary at $FERRY"
[[ -x $SERVER ]] || die "no library_server at $SERVER (cargo build --release -p manager --examples)"

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
drop_caches
log "(a) local restore"
j=$(restore_json "$OUT" "$LIB")
check local
local_s=$(field seconds <<<"$j")
fetched=$(field bytes_fetched <<<"$j")
local_mbs=$(mbs "$size" "$local_s")
echo "local      ${local_s}s  $local_mbs MB/s  fetched $fetched bytes" | tee -a "$REPORT"

log "(b) loopback HTTPS"
start_server 127.0.0.1:0
drop_caches
j=$(restore_json "$OUT" "$URL")
check loopback
lo_s=$(field seconds <<<"$j")
echo "loopback   ${lo_s}s  $(mbs "$size" "$lo_s") MB/s  $(pct "$local_s" "$lo_s") % of local (target >= 70)  concurrency $(field read_concurrency <<<"$j")" | tee -a "$REPORT"

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
ip link add fb-s netns "$NS_S" type veth peer name fb-c netns "$NS_C"
ip -n "$NS_S" addr add 10.231.0.1/30 dev fb-s
ip -n "$NS_C" addr add 10.231.0.2/30 dev fb-c
for ns in "$NS_S" "$NS_C"; do ip -n "$ns" link set lo up; done
ip -n "$NS_S" link set fb-s up; ip -n "$NS_C" link set fb-c up
start_server 10.231.0.1:8443 "$NS_S"
if ip netns exec "$NS_S" tc qdisc add dev fb-s root netem delay 25ms rate 100mbit limit 5000 2>/dev/null; then
	ip netns exec "$NS_C" tc qdisc add dev fb-c root netem delay 25ms rate 100mbit limit 5000
	LINK="netem delay 25ms rate 100mbit on each side"
else
	# This kernel has no sch_netem: the rate by tbf on each side, the
	# delay by a userspace proxy in the client's namespace (see
	# delay_proxy.py for what that does and does not model).
	for d in "$NS_S fb-s" "$NS_C fb-c"; do
		set -- $d
		ip netns exec "$1" tc qdisc add dev "$2" root tbf rate 100mbit burst 32kb latency 200ms
	done
	ip netns exec "$NS_C" python3 "$REPO/tests/bench/delay_proxy.py" 127.0.0.1 8443 10.231.0.1 8443 25 >"$WORK/proxy.out" 2>&1 &
	PIDS+=($!)
	for _ in $(seq 50); do grep -q ready "$WORK/proxy.out" 2>/dev/null && break; sleep 0.1; done
	URL=https://127.0.0.1:8443/v1/library
	LINK="tbf rate 100mbit on each side + delay_proxy.py 25 ms each way (no sch_netem in this kernel)"
fi
log "link: $LINK"
j=$(restore_json "$OUT" "$URL" "$NS_C")
check netns
s=$(field seconds <<<"$j")
f=$(field bytes_fetched <<<"$j")
rate=$(mbs "$f" "$s")
echo "link: $LINK" >>"$REPORT"
echo "100mbit/50ms ${s}s  fetched $f bytes at $rate MB/s = $(pct "$rate" 12.5) % of link rate (target >= 90)  image at $(mbs "$size" "$s") MB/s  concurrency $(field read_concurrency <<<"$j")" | tee -a "$REPORT"
cat "$REPORT"
