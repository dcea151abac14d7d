#!/usr/bin/env bash
# Peak memory of `s3mover prune` against the number of chunks in the repository (issue #5:
# "a repository holding 10 million chunks is pruned in at most 512 MiB"; results in
# docs/benchmarks-prune.md, section 2).
#
#   bench/prune-memory.sh [WORKDIR]      (default WORKDIR: <repo>/bench-work/prune-mem, gitignored)
#
# For each N in PRUNE_MEM_CHUNKS (default "1000000 3000000 10000000"), through the real
# `s3mover backup` path:
#   1. an N x 4 KiB image in which every 4 KiB block is unique (an 8-byte block counter and
#      PRUNE_MEM_FILL bytes of seeded pseudo-random filler, then zeros) -- 38 GiB for 10M
#      blocks. It lives on a btrfs file system mounted with compress-force=zstd:1 on a loop
#      device over a sparse file, so it takes ~1/30 of its size on disk (1.3 GB for 10M
#      blocks), and the engine's zstd shrinks each chunk to a blob of ~125 bytes, so the
#      repository stays small too (2.7 GB for 12M chunks; ~100,000 blobs per data pack);
#   2. `init --chunk-size 4K`, a full backup (N chunks);
#   3. 20 % of the volume rewritten (a 64 KiB run in every 320 KiB: every data pack gets dead
#      blobs) and an incremental with `--changed-ranges` (N/5 new chunks: 1.2 N indexed);
#   4. timed with /usr/bin/time -v:
#      A. `prune --grace 0s` (nothing is dead: marking and the index scans only);
#      B. `forget --keep-last 1 --prune --grace 0s` (the full backup goes: ~20 % of every data
#         pack is dead, so every data pack is repacked -- the heaviest prune for this repository).
# The backups are timed too (their peak RSS is reported, not targeted here). Everything big
# (the image's file system, the repository) is deleted after each N; the peak disk use (the
# loop file's allocated blocks plus the repository) is recorded.
#
# Knobs: PRUNE_MEM_CHUNKS, PRUNE_MEM_FILL (filler bytes per block, default 56),
#        PRUNE_S3MOVER=PATH (the binary to measure; default: build the checkout),
#        PRUNE_MEM_ALSO=PATH (another binary, e.g. an older revision: A and B are run with it
#        too, on a hard-linked copy of the same repository, after the first binary's).
# Needs root (loop device, mount) and mkfs.btrfs (installed with apt-get when missing).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${1:-$ROOT/bench-work/prune-mem}
CHUNKS=${PRUNE_MEM_CHUNKS:-1000000 3000000 10000000}
FILL=${PRUNE_MEM_FILL:-56}
log() { printf '\n== %s  [%s, load %s]\n' "$*" "$(date +%T)" "$(cut -d' ' -f1-3 /proc/loadavg)" >&2; }
wall_s() { awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$1"; }
rss_kib() { awk -F': ' '/Maximum resident set size/ {print $2}' "$1"; }
load1() { cut -d' ' -f1 /proc/loadavg; }

[[ -x /usr/bin/time ]] || apt-get install -y time >/dev/null
command -v mkfs.btrfs >/dev/null || apt-get install -y btrfs-progs >/dev/null
mkdir -p "$WORK/bin"
WORK=$(cd "$WORK" && pwd)
if [[ -n ${PRUNE_S3MOVER:-} ]]; then
  cp "$PRUNE_S3MOVER" "$WORK/bin/s3mover"
  cp "$(dirname "$PRUNE_S3MOVER")/REV" "$WORK/bin/REV" 2>/dev/null || echo "unknown" >"$WORK/bin/REV"
else
  (cd "$ROOT" && cargo build --release -p s3mover)
  cp "${CARGO_TARGET_DIR:-$ROOT/target}/release/s3mover" "$WORK/bin/s3mover"
  git -C "$ROOT" rev-parse --short HEAD >"$WORK/bin/REV"
fi
S3M=$WORK/bin/s3mover
ALSO=
if [[ -n ${PRUNE_MEM_ALSO:-} ]]; then
  cp "$PRUNE_MEM_ALSO" "$WORK/bin/s3mover-also"
  cp "$(dirname "$PRUNE_MEM_ALSO")/REV" "$WORK/bin/REV-also" 2>/dev/null || echo "unknown" >"$WORK/bin/REV-also"
  ALSO=$WORK/bin/s3mover-also
fi
export S3MOVER_PASSWORD=bench-password
RES=$WORK/results
mkdir -p "$RES"
MNT=$WORK/mnt
LOOP=

cleanup() {
  if mountpoint -q "$MNT" 2>/dev/null; then umount "$MNT"; fi
  if [[ -n $LOOP ]]; then losetup -d "$LOOP" 2>/dev/null || true; LOOP=; fi
  rm -rf "$WORK"/btrfs.raw "$WORK"/repo-* "$WORK"/ranges.json "$WORK"/disk.max
}
trap cleanup EXIT

# Peak disk use: allocated bytes of the loop file and the repositories (hard links once).
DISK_MAX=0
disk_note() {
  local used
  used=$({ du -s -B1 "$WORK/btrfs.raw" "$WORK"/repo-* 2>/dev/null || true; } | awk '{s+=$1} END {printf "%.0f\n", s}')
  ((used > DISK_MAX)) && DISK_MAX=$used
  return 0
}

# The image generator: `gen image PATH N FILL` writes version 0 of every block;
# `gen change PATH N FILL RANGES` rewrites a 64 KiB run in every 320 KiB with version 1 and
# writes the ranges file of the rewritten runs.
gen() {
  python3 - "$@" <<'EOF'
import hashlib, json, os, struct, sys

BLOCK, RUN, PERIOD = 4096, 16, 80  # change runs of 16 blocks, one run in every 80 blocks
BLOCKS_PER_BUF = 256

def filler(fill, buf_no):
    # The same for both versions: only the counter tells an old block from a new one.
    return hashlib.shake_256(b"s3mover prune-memory %d" % buf_no).digest(BLOCKS_PER_BUF * fill)

def fill_buffer(buf, first, count, fill, version, buf_no):
    f = filler(fill, buf_no)
    for j in range(count):
        at = j * BLOCK
        buf[at:at + 8] = struct.pack(">Q", (0x5A << 56) | (version << 48) | (first + j))
        buf[at + 8:at + 8 + fill] = f[j * fill:(j + 1) * fill]

cmd, path, n, fill = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
assert 0 <= fill <= BLOCK - 8
fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
if cmd == "image":
    os.ftruncate(fd, n * BLOCK)
    buf = bytearray(BLOCKS_PER_BUF * BLOCK)
    for b in range(0, n, BLOCKS_PER_BUF):
        count = min(BLOCKS_PER_BUF, n - b)
        fill_buffer(buf, b, count, fill, 0, b // BLOCKS_PER_BUF)
        os.write(fd, memoryview(buf)[:count * BLOCK])
else:
    # Runs start at block 32 of each period, so they lie inside one generator buffer.
    ranges = []
    buf = bytearray(BLOCKS_PER_BUF * BLOCK)
    for start in range(2 * RUN, n, PERIOD):
        count = min(RUN, n - start)
        buf_no, within = divmod(start, BLOCKS_PER_BUF)
        f = filler(fill, buf_no)
        for j in range(count):
            at, k = j * BLOCK, within + j
            buf[at:at + 8] = struct.pack(">Q", (0x5A << 56) | (1 << 48) | (start + j))
            buf[at + 8:at + 8 + fill] = f[k * fill:(k + 1) * fill]
        os.pwrite(fd, memoryview(buf)[:count * BLOCK], start * BLOCK)
        ranges.append((start * BLOCK, count * BLOCK))
    with open(sys.argv[5], "w") as out:
        out.write('{"blockMetadataType":"VARIABLE_LENGTH","volumeCapacityBytes":%d,"blockMetadata":[' % (n * BLOCK))
        out.write(",".join('{"byteOffset":%d,"sizeBytes":%d}' % r for r in ranges))
        out.write("]}")
    print(sum(r[1] for r in ranges) // BLOCK, file=sys.stderr)
os.fsync(fd)
os.close(fd)
EOF
}

timed() { # timed NAME COMMAND...: /usr/bin/time -v into $RES/NAME.time, JSON output to NAME.json
  local name=$1
  shift
  /usr/bin/time -v -o "$RES/$name.time" "$@" >"$RES/$name.json"
}

echo "rev chunks indexed_chunks full_backup_s full_backup_rss_KiB incr_backup_s incr_backup_rss_KiB marked_A wall_A_s rss_A_KiB load_A marked_B repacked_B wall_B_s rss_B_KiB load_B peak_disk_bytes" >"$RES/memory.txt"
for n in $CHUNKS; do
  log "N = $n chunks of 4 KiB"
  cleanup
  export S3MOVER_REPO=$WORK/repo-$n
  mkdir -p "$MNT"
  # A sparse loop file a little larger than the image's logical size: only what btrfs writes
  # (the compressed image and its metadata) takes disk space.
  truncate -s $((n * 4096 + (8 << 30))) "$WORK/btrfs.raw"
  mkfs.btrfs -q -f -m single -d single "$WORK/btrfs.raw" >/dev/null
  LOOP=$(losetup --find --show "$WORK/btrfs.raw")
  mount -o compress-force=zstd:1,noatime "$LOOP" "$MNT"
  IMG=$MNT/m.img

  log "generating the image ($((n * 4096 >> 20)) MiB, $FILL filler bytes per block)"
  gen image "$IMG" "$n" "$FILL"
  sync
  disk_note
  "$S3M" -q init --chunk-size 4K
  log "full backup"
  timed full-"$n" "$S3M" -o json backup "$IMG" --volume m
  disk_note
  log "rewriting 20 % of the image"
  changed=$(gen change "$IMG" "$n" "$FILL" "$WORK/ranges.json" 2>&1)
  sync
  log "incremental backup ($changed blocks changed)"
  timed incr-"$n" "$S3M" -o json backup "$IMG" --volume m --changed-ranges "$WORK/ranges.json"
  disk_note
  indexed=$((n + changed))

  # A and B with one binary on one repository: a row of memory.txt. A copy of the repository
  # (hard links: objects are never changed in place) is kept for the other binary.
  [[ -n $ALSO ]] && cp -al "$S3MOVER_REPO" "$WORK/repo-also"
  measure() { # measure BINARY TAG
    local bin=$1 tag=$2 sampled
    log "A ($tag): prune, nothing dead"
    timed A-"$tag"-"$n" "$bin" -o json prune --grace 0s
    loadA=$(load1)
    log "B ($tag): forget --keep-last 1 --prune"
    # The disk peaks while B runs (new packs are written before old ones go): sample it.
    echo "$DISK_MAX" >"$WORK/disk.max"
    (while sleep 2; do disk_note; echo "$DISK_MAX" >"$WORK/disk.max"; done) &
    sampler=$!
    timed B-"$tag"-"$n" "$bin" -o json forget --keep-last 1 --prune --grace 0s
    loadB=$(load1)
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
    sampled=$(cat "$WORK/disk.max")
    disk_note
    ((sampled > DISK_MAX)) && DISK_MAX=$sampled
    read -r mA < <(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["chunksMarked"])' "$RES/A-$tag-$n.json")
    read -r mB rB < <(python3 -c 'import json,sys; p=json.load(open(sys.argv[1]))["prune"]; print(p["chunksMarked"], p["repackedPacks"])' "$RES/B-$tag-$n.json")
    echo "$(tr ' ' '_' <"$WORK/bin/REV${tag#main}" | cut -c1-40) $n $indexed $(wall_s "$RES/full-$n.time") $(rss_kib "$RES/full-$n.time") $(wall_s "$RES/incr-$n.time") $(rss_kib "$RES/incr-$n.time") $mA $(wall_s "$RES/A-$tag-$n.time") $(rss_kib "$RES/A-$tag-$n.time") $loadA $mB $rB $(wall_s "$RES/B-$tag-$n.time") $(rss_kib "$RES/B-$tag-$n.time") $loadB $DISK_MAX" \
      | tee -a "$RES/memory.txt" >&2
  }
  measure "$S3M" main
  if [[ -n $ALSO ]]; then
    S3MOVER_REPO=$WORK/repo-also measure "$ALSO" main-also
  fi
  DISK_MAX=0
  "$S3M" -q check >"$RES/check-$n.txt" 2>&1 || echo "check failed for N = $n (see $RES/check-$n.txt)" >&2
  cleanup
done

# Peak RSS against indexed chunks: the slope between consecutive sizes.
python3 - "$RES/memory.txt" <<'EOF' | tee "$RES/slope.txt"
import sys
rows = [l.split() for l in open(sys.argv[1]).read().splitlines()[1:]]
for rev in dict.fromkeys(r[0] for r in rows):
    for name, col in (("A prune, nothing dead", 9), ("B forget --prune, every data pack repacked", 14)):
        pts = [(int(r[2]), int(r[col]) * 1024) for r in rows if r[0] == rev]
        print(f"{rev}: {name}: " + ", ".join(f"{x:,} chunks: {y / 2**20:.1f} MiB" for x, y in pts))
        for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
            print(f"  {x0:,} -> {x1:,} chunks: {(y1 - y0) / (x1 - x0):.1f} bytes per indexed chunk")
EOF
