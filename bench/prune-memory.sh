#!/usr/bin/env bash
# Peak memory of `s3mover prune` against the number of chunks in the repository (issue #5:
# "a repository holding 10 million chunks is pruned in at most 512 MiB"; results in
# docs/benchmarks-prune.md). A 10-million-chunk repository needs 10M x chunk size of unique data
# (40 GiB at 4 KiB chunks), so this measures smaller repositories and fits a line.
#
#   bench/prune-memory.sh [WORKDIR]      (default WORKDIR: <repo>/bench-work/prune-mem, gitignored)
#
# For each N in PRUNE_MEM_CHUNKS (default "262144 524288 1048576"): a repository with
# `--chunk-size 4K`, a full backup of an N x 4 KiB image of seeded random data, then an
# incremental after N/5 random 4 KiB writes (so ~1.18 N chunks are indexed). Timed with
# /usr/bin/time -v:
#   A. `prune --grace 0s`  (nothing is dead: marking and the index scans only)
#   B. `forget --keep-last 1 --prune --grace 0s`  (the full backup goes: ~18 % of every data pack
#      is dead, so every data pack is repacked -- the heaviest prune for this repository)
# Knobs: PRUNE_MEM_CHUNKS, PRUNE_S3MOVER=PATH (binary to measure; default: build the checkout).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${1:-$ROOT/bench-work/prune-mem}
CHUNKS=${PRUNE_MEM_CHUNKS:-262144 524288 1048576}
GEN="python3 $ROOT/bench/gen.py"
log() { printf '\n== %s  [%s, load %s]\n' "$*" "$(date +%T)" "$(cut -d' ' -f1-3 /proc/loadavg)" >&2; }
wall_s() { awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$1"; }
rss_kib() { awk -F': ' '/Maximum resident set size/ {print $2}' "$1"; }

[[ -x /usr/bin/time ]] || apt-get install -y time >/dev/null
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
export S3MOVER_PASSWORD=bench-password
RES=$WORK/results
rm -rf "$RES" && mkdir -p "$RES"
trap 'rm -rf "$WORK"/m.img "$WORK"/repo-*' EXIT

echo "chunks indexed_chunks marked_A wall_A_s rss_A_KiB marked_B repacked_B wall_B_s rss_B_KiB load" >"$RES/memory.txt"
for n in $CHUNKS; do
  log "N = $n chunks of 4 KiB"
  rm -rf "$WORK/m.img" "$WORK/repo-$n"
  export S3MOVER_REPO=$WORK/repo-$n
  $GEN image "$WORK/m.img" --size $((n * 4096)) --data $((n * 4096)) --extent 1M --seed 7
  "$S3M" -q init --chunk-size 4K
  "$S3M" -q backup "$WORK/m.img" --volume m
  $GEN writes "$WORK/m.img" --count $((n / 5)) --block 4K --seed 8 --ranges "$WORK/ranges.json" 2>/dev/null
  "$S3M" -q backup "$WORK/m.img" --volume m --changed-ranges "$WORK/ranges.json"
  indexed=$(( n + $(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["blockMetadata"]))' "$WORK/ranges.json") ))
  log "A: prune, nothing dead"
  /usr/bin/time -v -o "$RES/A-$n.time" "$S3M" -o json prune --grace 0s >"$RES/A-$n.json"
  log "B: forget --keep-last 1 --prune"
  /usr/bin/time -v -o "$RES/B-$n.time" "$S3M" -o json forget --keep-last 1 --prune --grace 0s >"$RES/B-$n.json"
  read -r mA < <(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["chunksMarked"])' "$RES/A-$n.json")
  read -r mB rB < <(python3 -c 'import json,sys; p=json.load(open(sys.argv[1]))["prune"]; print(p["chunksMarked"], p["repackedPacks"])' "$RES/B-$n.json")
  echo "$n $indexed $mA $(wall_s "$RES/A-$n.time") $(rss_kib "$RES/A-$n.time") $mB $rB $(wall_s "$RES/B-$n.time") $(rss_kib "$RES/B-$n.time") $(cut -d' ' -f1 /proc/loadavg)" \
    | tee -a "$RES/memory.txt" >&2
  rm -rf "$WORK/m.img" "$WORK/repo-$n"
done

# Least-squares line of peak RSS against indexed chunks, extrapolated to 10 million.
python3 - "$RES/memory.txt" <<'EOF' | tee "$RES/fit.txt"
import sys
rows = [l.split() for l in open(sys.argv[1]).read().splitlines()[1:]]
x = [int(r[1]) for r in rows]
for name, col in (("A prune, nothing dead", 4), ("B forget --prune, every data pack repacked", 8)):
    y = [int(r[col]) * 1024 for r in rows]
    n = len(x); mx = sum(x) / n; my = sum(y) / n
    sxx = sum((a - mx) ** 2 for a in x)
    slope = sum((a - mx) * (b - my) for a, b in zip(x, y)) / sxx if sxx else 0.0
    icpt = my - slope * mx
    est = icpt + slope * 10_000_000
    print(f"{name}: {slope:.1f} bytes per indexed chunk + {icpt / 2**20:.1f} MiB; "
          f"EXTRAPOLATED to 10,000,000 chunks: {est / 2**20:.0f} MiB (target 512 MiB)")
EOF
