#!/usr/bin/env bash
# bench-boot.sh — the agent's boot media against issue 6's targets:
# compressed ramdisk <= 40 MB, kernel start -> agent ready <= 15 s under
# QEMU TCG, idle RSS <= 30 MB. Builds the ramdisk with zstd and with gzip,
# boots each once (-kernel/-initrd, virtio disk, e1000) and reads the
# agent's own console lines ("ready N s after the kernel started",
# "idle: rss N KiB (anon A KiB, file F KiB, shmem S KiB)": in the ramdisk
# the agent's own text counts as shmem (tmpfs), pages the ramdisk holds in
# RAM anyway; anon is what the agent costs). Needs the static agent
# (boot/build-agent.sh).
#   FERRY=target/release/ferry boot/bench-boot.sh
set -euo pipefail
cd "$(dirname "$0")/.."
FERRY=${FERRY:-target/release/ferry}
WORK=$(mktemp -d /var/tmp/ferry-bench-boot.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
kernel=$(ls /boot/vmlinuz-* | sort -V | tail -1)
truncate -s 2G "$WORK/disk.img"
printf '%-6s %10s %12s %12s %10s %10s\n' comp size ready idle-rss anon shmem
for comp in zstd gzip; do
  "$FERRY" boot initramfs --compression "$comp" --output "$WORK/initrd.$comp" 2>"$WORK/build.$comp"
  size=$(stat -c %s "$WORK/initrd.$comp")
  timeout 300 qemu-system-x86_64 -machine q35 -m 1024 -smp 2 -kernel "$kernel" -initrd "$WORK/initrd.$comp" \
    -append "console=ttyS0,115200n8 printk.time=1 quiet loglevel=4 ferry.heartbeat=2" \
    -drive "file=$WORK/disk.img,format=raw,if=virtio" -nic user,model=e1000 \
    -display none -monitor none -serial stdio -no-reboot </dev/null >"$WORK/console.$comp" 2>&1 &
  qpid=$!
  for _ in $(seq 300); do grep -q 'ferry-agent: idle: rss' "$WORK/console.$comp" && break; sleep 1; done
  kill "$qpid" 2>/dev/null || true
  wait "$qpid" 2>/dev/null || true
  ready=$(sed -n 's/.*ferry-agent: ready \([0-9.]*\) s.*/\1 s/p' "$WORK/console.$comp" | head -1)
  rss=$(sed -n 's/.*ferry-agent: idle: rss \([0-9]*\) KiB.*/\1/p' "$WORK/console.$comp" | head -1)
  anon=$(sed -n 's/.*ferry-agent: idle: rss .*(anon \([0-9]*\) KiB.*/\1/p' "$WORK/console.$comp" | head -1)
  shmem=$(sed -n 's/.*ferry-agent: idle: rss .* shmem \([0-9]*\) KiB.*/\1/p' "$WORK/console.$comp" | head -1)
  mb() { [ -n "$1" ] && echo "scale=1; $1*1024/1000000" | bc || echo none; }
  printf '%-6s %7.1f MB %12s %9s MB %7s MB %7s MB\n' "$comp" "$(echo "$size/1000000" | bc -l)" "${ready:-none}" \
    "$(mb "$rss")" "$(mb "$anon")" "$(mb "$shmem")"
done
cat "$WORK/build.zstd" >&2
