#!/usr/bin/env bash
# S3 benchmark: s3mover against restic on the same Garage bucket, in one run.
#
#   bench/s3.sh [WORKDIR]        (default WORKDIR: <repo>/bench-work/s3, gitignored)
#
# Garage (single node, loopback) is started by the testkit's `s3mover-test-garage`; both tools
# talk to it through the testkit's `s3mover-fault-proxy` with faults off, which only counts
# requests (PUT/GET/HEAD/LIST/DELETE/POST) so every phase reports what it sent. Both tools pay
# the same proxy hop. Phases, on the engine issue's data (bench/gen.py):
#   1. full backup of a 2 GiB image holding 1 GiB of random data in scattered 1 MiB extents
#   2. restore of it (restic: the faster of `restic restore` and `restic dump`)
#   3. 2000 random 4 KiB writes; s3mover backs up with the ranges file, restic with --stdin
#   4. restore of the incremental (s3mover; correctness check, also timed)
# Every timed command starts with cold page caches (needs root) on a settled disk, and ends with
# `sync`. "Settled": the disk holding WORKDIR did no reads, writes or discards for two seconds
# (at most 30 s of waiting). On a filesystem mounted with `discard`, deleting a tool's 2 GiB
# outputs sends discards after the deletion; without waiting they slowed whichever command came
# next by about a second — in even rounds s3mover's restore, after restic's restore and dump.
# The phases run BENCH_RUNS times (default 3), each round on fresh repositories (prefixes of
# their own in the bucket) and the original image, the tools' order alternating between rounds;
# the report gives medians and every round. Request counts are those of round 1 (they do not
# depend on timing).
# Results: WORKDIR/results/report.md (markdown) and one JSON of counts per phase and round.
#
# Knobs: BENCH_SIZE=2G BENCH_DATA=1G BENCH_WRITES=2000 BENCH_RUNS=3
#   GARAGE_COMPRESSION_LEVEL=none (or a zstd level; default: Garage's own, 1)
#   S3MOVER_CHUNK_SIZE=32K (s3mover's repositories; default: its own default, 64K)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${1:-$ROOT/bench-work/s3}
SIZE=${BENCH_SIZE:-2G}
DATA=${BENCH_DATA:-1G}
WRITES=${BENCH_WRITES:-2000}
RUNS=${BENCH_RUNS:-3}
GEN="python3 $ROOT/bench/gen.py"

log() { printf '\n== %s  [%s, load %s]\n' "$*" "$(date +%T)" "$(cut -d' ' -f1-3 /proc/loadavg)" >&2; }
die() { echo "s3.sh: $*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "run as root (dropping page caches needs it)"
command -v restic >/dev/null || die "restic is missing: apt-get install restic"
command -v jq >/dev/null || die "jq is missing"
command -v curl >/dev/null || die "curl is missing"
export PATH="$HOME/.cargo/bin:$PATH"
"$ROOT/.ci/install-garage.sh" >&2
command -v b3sum >/dev/null || cargo install b3sum --locked >&2

log "building s3mover and the testkit tools (release)"
(cd "$ROOT" && cargo build --release -p s3mover -p s3mover-testkit --bins)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
RES=$WORK/results
rm -rf "$RES" "$WORK"/*.img "$WORK"/out-* "${WORK:?}/bin" && mkdir -p "$RES" "$WORK/bin"
# Frozen copies: a rebuild in the tree during the run cannot change what is measured.
cp "$TARGET/release/s3mover" "$TARGET/release/s3mover-test-garage" \
  "$TARGET/release/s3mover-fault-proxy" "$WORK/bin/"
BIN=$WORK/bin
S3M=$BIN/s3mover

PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"/*.img "$WORK"/out-*
}
trap cleanup EXIT

wait_for_line() {  # wait_for_line FILE PATTERN
  for _ in $(seq 1 300); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  die "timed out waiting for $2 in $1"
}

log "starting Garage and the counting proxy"
"$BIN/s3mover-test-garage" >"$WORK/garage.env" &
PIDS+=($!)
wait_for_line "$WORK/garage.env" '^GARAGE_PORT='
set -a
# garage.env is written by the Garage harness at run time.
# shellcheck source=/dev/null
. "$WORK/garage.env"
set +a
"$BIN/s3mover-fault-proxy" --upstream "127.0.0.1:$GARAGE_PORT" >"$WORK/proxy.url" &
PIDS+=($!)
wait_for_line "$WORK/proxy.url" '^http'
EP=$(head -n 1 "$WORK/proxy.url")
export AWS_ENDPOINT_URL=$EP
export S3MOVER_PASSWORD=bench-password RESTIC_PASSWORD=bench-password
RO=(-o s3.region="$AWS_REGION" -o s3.bucket-lookup=path)
unset S3MOVER_PASSWORD_FILE S3MOVER_PASSWORD_COMMAND || true

counts_reset() { curl -fsS "$EP/__faultproxy/reset" >/dev/null; }
counts_get() { curl -fsS "$EP/__faultproxy/counts"; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
DISK_STAT=/sys/class/block/$(basename "$(df --output=source "$WORK" | tail -n 1)")/stat
settle() {  # until the disk's read, write and discard counts hold still for two seconds
  [[ -r $DISK_STAT ]] || return 0
  local prev="" cur still=0
  for _ in $(seq 1 30); do
    cur=$(awk '{print $1, $5, $12}' "$DISK_STAT")
    if [[ $cur == "$prev" ]]; then still=$((still + 1)); else still=0; fi
    (( still >= 2 )) && return 0
    prev=$cur
    sleep 1
  done
}

declare -A T C
# timed NAME 'command': cold caches, requests counted from zero, wall time including sync.
timed() {
  local name=$1 cmd=$2 t0 t1
  drop_caches
  settle
  counts_reset
  t0=$(date +%s.%N)
  if ! bash -o pipefail -ec "{ $cmd; } >'$RES/$name.out' 2>'$RES/$name.err'; sync"; then
    cat "$RES/$name.err" >&2
    die "$name failed: $cmd"
  fi
  t1=$(date +%s.%N)
  counts_get >"$RES/$name.counts"
  T[$name]=$(awk "BEGIN { printf \"%.2f\", $t1 - $t0 }")
  C[$name]=$(jq -r '"\(.put) / \(.get) / \(.head) / \(.list) / \(.delete) / \(.post)"' "$RES/$name.counts")
  printf '   %-18s %8s s   PUT/GET/HEAD/LIST/DELETE/POST %s\n' "$name" "${T[$name]}" "${C[$name]}" >&2
  echo "$cmd" >"$RES/$name.cmd"
}
same() {
  [[ $(b3sum --no-names "$1") == "$(b3sum --no-names "$2")" ]] || die "$2 differs from $1"
}

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(cd "$ROOT" && git rev-parse --short HEAD)$(cd "$ROOT" && git diff --quiet -- crates || echo ' (crates/ modified)')"
  echo "cpu: $(nproc) x $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
  echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "garage: $(garage --version 2>/dev/null | head -n 1 || echo '?'), compression_level ${GARAGE_COMPRESSION_LEVEL:-1 (its default)}"
  echo "restic: $(restic version)"
  echo "s3mover chunk size: ${S3MOVER_CHUNK_SIZE:-its default}"
} >"$RES/env.txt"
cat "$RES/env.txt" >&2

IMG=$WORK/vol.img
log "data: $SIZE image with $DATA of random data in 1 MiB extents"
$GEN image "$IMG" --size "$SIZE" --data "$DATA" --extent 1M --seed 1

cp --sparse=always "$IMG" "$WORK/vol-original.img"

# one_round N: every phase on fresh repositories and the original image. Odd rounds run
# s3mover first, even rounds restic.
one_round() {
  local r=$1
  cp --sparse=always "$WORK/vol-original.img" "$IMG"
  export S3MOVER_REPO="s3://$S3_BUCKET/s3mover-$r"
  export RESTIC_REPOSITORY="s3:$EP/$S3_BUCKET/restic-$r"
  "$S3M" init -q ${S3MOVER_CHUNK_SIZE:+--chunk-size "$S3MOVER_CHUNK_SIZE"}
  restic "${RO[@]}" init -q
  local s3m_first=$(( r % 2 ))

  log "round $r, phase 1: full backup"
  local s3m_full="'$S3M' backup '$IMG' --volume v -o json"
  local restic_full="restic ${RO[*]} backup --host bench --stdin --stdin-filename v.img --json <'$IMG' | tail -n 1"
  if (( s3m_first )); then timed "s3m_full.$r" "$s3m_full"; timed "restic_full.$r" "$restic_full"
  else timed "restic_full.$r" "$restic_full"; timed "s3m_full.$r" "$s3m_full"; fi

  log "round $r, phase 2: restore"
  s3m_restore() {
    timed "s3m_restore.$r" "'$S3M' restore latest --volume v --target '$WORK/out-s3m.img' -o json"
    same "$IMG" "$WORK/out-s3m.img"; rm -f "$WORK/out-s3m.img"
  }
  restic_restores() {
    timed "restic_restore.$r" "restic ${RO[*]} restore latest --host bench --target '$WORK/out-restic'"
    same "$IMG" "$WORK/out-restic/v.img"; rm -rf "$WORK/out-restic"
    timed "restic_dump.$r" "restic ${RO[*]} dump latest --host bench v.img >'$WORK/out-dump.img'"
    same "$IMG" "$WORK/out-dump.img"; rm -f "$WORK/out-dump.img"
  }
  if (( s3m_first )); then s3m_restore; restic_restores; else restic_restores; s3m_restore; fi

  log "round $r, phase 3: $WRITES random 4 KiB writes, incremental"
  $GEN writes "$IMG" --count "$WRITES" --block 4K --seed 2 --ranges "$WORK/changes.json"
  local s3m_incr="'$S3M' backup '$IMG' --volume v --changed-ranges '$WORK/changes.json' -o json"
  local restic_incr="restic ${RO[*]} backup --host bench --stdin --stdin-filename v.img --json <'$IMG' | tail -n 1"
  if (( s3m_first )); then timed "s3m_incr.$r" "$s3m_incr"; timed "restic_incr.$r" "$restic_incr"
  else timed "restic_incr.$r" "$restic_incr"; timed "s3m_incr.$r" "$s3m_incr"; fi

  log "round $r, phase 4: restore of the incremental"
  timed "s3m_restore_incr.$r" "'$S3M' restore latest --volume v --target '$WORK/out-s3m2.img' -o json"
  same "$IMG" "$WORK/out-s3m2.img"; rm -f "$WORK/out-s3m2.img"
}
for r in $(seq 1 "$RUNS"); do one_round "$r"; done
rm -f "$WORK/vol-original.img"

# T[name] = median over the rounds, R[name] = every round's time.
declare -A R
for name in s3m_full restic_full s3m_restore restic_restore restic_dump s3m_incr restic_incr s3m_restore_incr; do
  times=()
  for r in $(seq 1 "$RUNS"); do times+=("${T[$name.$r]}"); done
  R[$name]=$(printf '%s / ' "${times[@]}" | sed 's| / $||')
  T[$name]=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}')
  C[$name]=${C[$name.1]}
  cp "$RES/$name.1.cmd" "$RES/$name.cmd"
  cp "$RES/$name.1.out" "$RES/$name.out"
done
echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$RES/env.txt"

# ---- report --------------------------------------------------------------------------------
ratio() { awk "BEGIN { printf \"%.1f\", $1 / $2 }"; }
min() { awk "BEGIN { print ($1 < $2) ? $1 : $2 }"; }
RESTIC_RESTORE=$(min "${T[restic_restore]}" "${T[restic_dump]}")
S3M_FULL_UP=$(jq -r .bytesUploaded "$RES/s3m_full.out")
S3M_INCR_UP=$(jq -r .bytesUploaded "$RES/s3m_incr.out")
RESTIC_FULL_UP=$(jq -r '.data_added // empty' "$RES/restic_full.out")
RESTIC_INCR_UP=$(jq -r '.data_added // empty' "$RES/restic_incr.out")
mib() { [[ -n $1 ]] && awk "BEGIN { printf \"%.1f MiB\", $1 / 1048576 }" || echo "?"; }
{
  echo "## Run of $(sed -n 's/^date: //p' "$RES/env.txt")"
  echo
  echo '```'
  cat "$RES/env.txt"
  echo '```'
  echo
  echo "Medians of $RUNS rounds; requests counted in round 1."
  echo
  echo "| phase | s3mover | restic | restic ÷ s3mover | s3mover requests PUT/GET/HEAD/LIST/DELETE/POST | restic requests PUT/GET/HEAD/LIST/DELETE/POST |"
  echo "|---|---|---|---|---|---|"
  echo "| full backup ($SIZE image, $DATA data) | ${T[s3m_full]} s, $(mib "$S3M_FULL_UP") up | ${T[restic_full]} s, $(mib "$RESTIC_FULL_UP") added | $(ratio "${T[restic_full]}" "${T[s3m_full]}")× | ${C[s3m_full]} | ${C[restic_full]} |"
  echo "| restore | ${T[s3m_restore]} s | restore ${T[restic_restore]} s, dump ${T[restic_dump]} s | $(ratio "$RESTIC_RESTORE" "${T[s3m_restore]}")× (vs faster) | ${C[s3m_restore]} | restore ${C[restic_restore]}; dump ${C[restic_dump]} |"
  echo "| incremental ($WRITES × 4 KiB writes) | ${T[s3m_incr]} s, $(mib "$S3M_INCR_UP") up | ${T[restic_incr]} s, $(mib "$RESTIC_INCR_UP") added | $(ratio "${T[restic_incr]}" "${T[s3m_incr]}")× | ${C[s3m_incr]} | ${C[restic_incr]} |"
  echo "| restore of the incremental | ${T[s3m_restore_incr]} s | – | – | ${C[s3m_restore_incr]} | – |"
  echo
  echo "Every round (s):"
  echo
  for name in s3m_full restic_full s3m_restore restic_restore restic_dump s3m_incr restic_incr s3m_restore_incr; do
    echo "- $name: ${R[$name]}"
  done
  echo
  echo "Commands (run from bench/s3.sh with S3MOVER_REPO=s3://BUCKET/s3mover-N, RESTIC_REPOSITORY=s3:PROXY/BUCKET/restic-N for round N):"
  echo
  for name in s3m_full restic_full s3m_restore restic_restore restic_dump s3m_incr restic_incr s3m_restore_incr; do
    echo "- \`$name\`: \`$(sed "s|$WORK|\$WORK|g; s|$ROOT|.|g" "$RES/$name.cmd")\`"
  done
} >"$RES/report.md"
cat "$RES/report.md"
