#!/usr/bin/env bash
# Benchmark of the s3mover engine against restic on the same data, in one run.
#
#   bench/engine.sh [WORKDIR]        (default WORKDIR: <repo>/bench-work, gitignored)
#
# Cases (see docs/benchmarks.md for the targets and the last measured numbers):
#   1. 2 GiB image, 1 GiB random data in scattered 1 MiB extents: full backup, s3mover vs restic
#   2. restore of it: s3mover vs the faster of `restic restore` and `restic dump`
#   3. 2000 random 4 KiB writes: s3mover incremental from a ranges file vs restic's incremental
#   4. sparse 1 TiB image, 64 MiB of data: full and incremental (s3mover only: restic --stdin
#      would read the whole TiB)
#   5. chunk-size trade-off: full and incremental of cases 1/3 at 32K, 64K, 128K, 256K
#   6. the machine's limit: cold read + BLAKE3 (b3sum) of the 2 GiB image
#
# Every timed command starts with cold caches (sync; echo 3 > drop_caches, needs root) and its
# time includes a final `sync`, so both tools pay for reading their input from disk and for
# getting their output onto it. Time and peak RSS come from /usr/bin/time -v.
# Repository growth is the sum of file sizes under the repository directory before and after.
#
# Knobs (environment, for quick trial runs; the defaults are the benchmark):
#   BENCH_SIZE=2G BENCH_DATA=1G BENCH_WRITES=2000 BENCH_BIG_SIZE=1T BENCH_BIG_DATA=64M
#   BENCH_CHUNKS="32K 64K 128K 256K"  BENCH_RUNS=3 (rounds of each s3mover/restic comparison;
#   the report gives medians, rounds alternate between the tools)  BENCH_KEEP=1 (keep the work directory's big files)
#   BENCH_REV=HEAD (build that commit in WORKDIR/src, WORKDIR/target instead of the checkout)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${1:-$ROOT/bench-work}
SIZE=${BENCH_SIZE:-2G}
DATA=${BENCH_DATA:-1G}
WRITES=${BENCH_WRITES:-2000}
BIG_SIZE=${BENCH_BIG_SIZE:-1T}
BIG_DATA=${BENCH_BIG_DATA:-64M}
CHUNKS=${BENCH_CHUNKS:-32K 64K 128K 256K}
RUNS=${BENCH_RUNS:-3}
GEN="python3 $ROOT/bench/gen.py"

log() { printf '\n== %s  [%s, load %s]\n' "$*" "$(date +%T)" "$(cut -d' ' -f1-3 /proc/loadavg)" >&2; }
die() { echo "engine.sh: $*" >&2; exit 1; }

# ---- prerequisites -------------------------------------------------------------------------
[[ $(id -u) == 0 ]] || die "run as root (dropping page caches needs it)"
command -v restic >/dev/null || die "restic is missing: apt-get install restic"
command -v openssl >/dev/null || die "openssl is missing (the data generator uses it)"
if [[ ! -x /usr/bin/time ]]; then
  log "installing GNU time"
  apt-get install -y time >/dev/null
fi
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v b3sum >/dev/null; then
  log "installing b3sum from crates.io"
  cargo install b3sum --locked >/dev/null
fi

mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
if [[ -n ${BENCH_REV:-} ]]; then
  # A committed revision, built in a copy of its own (the checkout may hold unfinished edits).
  REV=$(git -C "$ROOT" rev-parse --short "$BENCH_REV")
  log "building s3mover $REV (release) in $WORK/src"
  if [[ $(cat "$WORK/src/.bench-rev" 2>/dev/null) != "$REV" ]]; then
    rm -rf "$WORK/src" && mkdir -p "$WORK/src"
    # -m: files get the time of extraction, not the commit's. With the commit's time, a revision
    # committed before WORK/target's last build looks unchanged to cargo, which would keep the
    # workspace crates of the revision built before.
    git -C "$ROOT" archive "$REV" | tar -x -m -C "$WORK/src"
    echo "$REV" >"$WORK/src/.bench-rev"
  fi
  (cd "$WORK/src" && CARGO_TARGET_DIR=$WORK/target cargo build --release -p s3mover)
  S3M=$WORK/target/release/s3mover
else
  REV="$(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- crates Cargo.toml Cargo.lock || echo ' + uncommitted changes')"
  log "building s3mover (release)"
  (cd "$ROOT" && cargo build --release -p s3mover)
  S3M=$ROOT/target/release/s3mover
fi
cleanup_big() {
  [[ ${BENCH_KEEP:-0} == 1 ]] && return
  rm -rf "$WORK"/*.img "$WORK"/repo-* "$WORK"/out-*
}
cleanup_big
trap cleanup_big EXIT
RES=$WORK/results
rm -rf "$RES" && mkdir -p "$RES"

export S3MOVER_PASSWORD=bench-password RESTIC_PASSWORD=bench-password
unset S3MOVER_REPO RESTIC_REPOSITORY S3MOVER_PASSWORD_FILE S3MOVER_PASSWORD_COMMAND || true

# ---- helpers -------------------------------------------------------------------------------
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# timed NAME 'shell command': cold caches, run it plus sync under /usr/bin/time -v.
# Sets T[NAME] (seconds) and M[NAME] (peak RSS, KiB); stdout of the command goes to $RES/NAME.out.
declare -A T M
timed() {
  local name=$1 cmd=$2
  drop_caches
  if ! /usr/bin/time -v -o "$RES/$name.time" bash -o pipefail -ec "{ $cmd; } >'$RES/$name.out'; sync"; then
    cat "$RES/$name.time" >&2
    die "$name failed: $cmd"
  fi
  T[$name]=$(awk -F': ' '/Elapsed \(wall clock\)/ {n = split($2, p, ":"); s = 0;
                for (i = 1; i <= n; i++) s = s * 60 + p[i]; print s}' "$RES/$name.time")
  M[$name]=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$RES/$name.time")
  printf '   %-22s %8.2f s  %8.1f MiB peak RSS\n' "$name" "${T[$name]}" "$(awk "BEGIN{print ${M[$name]}/1024}")" >&2
}
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1}
  END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

# compare NAME... : RUNS rounds; in each, for every NAME: call setup_NAME (if defined), then
# timed NAME.i "$(cmd_NAME)", then check_NAME (if defined). T/M[NAME] are the medians, TS[NAME]
# the times of all rounds, and $RES/NAME.out the output of the last round.
declare -A TS
compare() {
  local i n
  for ((i = 1; i <= RUNS; i++)); do
    for n in "$@"; do
      if declare -F "setup_$n" >/dev/null; then "setup_$n"; fi
      timed "$n.$i" "$("cmd_$n")"
      if declare -F "check_$n" >/dev/null; then "check_$n"; fi
    done
  done
  for n in "$@"; do
    local ts=() ms=()
    for ((i = 1; i <= RUNS; i++)); do ts+=("${T[$n.$i]}"); ms+=("${M[$n.$i]}"); done
    T[$n]=$(median "${ts[@]}"); M[$n]=$(median "${ms[@]}"); TS[$n]="${ts[*]}"
    cp "$RES/$n.$RUNS.out" "$RES/$n.out"
  done
}
repo_bytes() { find "$1" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}'; }
repo_objects() { find "$1" -type f | wc -l; }
json() { jq -r "$2" "$RES/$1.out"; }
calc() { awk "BEGIN { printf \"%.${2:-2}f\", $1 }"; }
mib() { calc "$1 / 1048576" "${2:-1}"; }
tt() { if [[ -n ${TS[$1]:-} ]]; then echo "${T[$1]} (${TS[$1]// / / })"; else echo "${T[$1]}"; fi; }
rss() { calc "${M[$1]} / 1024" 1; }  # peak RSS of a timed run, MiB
same() {  # same FILE1 FILE2: byte-equal, by BLAKE3
  local a b
  a=$(b3sum --no-names "$1"); b=$(b3sum --no-names "$2")
  [[ $a == "$b" ]] || die "$2 differs from $1"
}

# ---- environment ---------------------------------------------------------------------------
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "s3mover: $REV"
  echo "cpu: $(nproc) x $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
  echo "memory: $(free -g | awk '/Mem:/ {print $2 " GiB total, " $7 " GiB available"}')"
  echo "disk: $(df -h "$WORK" | awk 'NR == 2 {print $1 ", " $2 " (" $4 " free)"}'), $(findmnt -no FSTYPE -T "$WORK")"
  echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "restic: $(restic version)"
  echo "b3sum: $(b3sum --version)"
} >"$RES/env.txt"
cat "$RES/env.txt" >&2

IMG=$WORK/vol.img
R64=$WORK/repo-s3m
RR=$WORK/repo-restic

# ---- case 1: full backup ----------------------------------------------------------------------
log "case 1: $SIZE image with $DATA of random data in 1 MiB extents"
$GEN image "$IMG" --size "$SIZE" --data "$DATA" --extent 1M --seed 1
IMG_BYTES=$(stat -c %s "$IMG")
# Each round starts from empty repositories; the last round's are kept for what follows.
setup_s3m_full() {
  rm -rf "$R64" && "$S3M" --repo "$R64" init -q
  B0_S=$(repo_bytes "$R64"); O0_S=$(repo_objects "$R64")
}
cmd_s3m_full() { echo "'$S3M' --repo '$R64' backup '$IMG' --volume v -o json"; }
setup_restic_full() { rm -rf "$RR" && restic init -q -r "$RR"; B0_R=$(repo_bytes "$RR"); }
cmd_restic_full() { echo "restic -r '$RR' backup --host bench --stdin --stdin-filename v.img --json <'$IMG' | tail -n 1"; }
compare s3m_full restic_full
CHUNK_DEFAULT=$(jq -r .chunkSize "$R64/config")
B1_S=$(repo_bytes "$R64"); O1_S=$(repo_objects "$R64"); B1_R=$(repo_bytes "$RR")

# ---- case 6: the machine's limit (same image, before it changes) --------------------------------
log "case 6: cold read and BLAKE3 of the image"
cmd_read_only() { echo "cat '$IMG' >/dev/null"; }
cmd_b3sum() { echo "b3sum '$IMG'"; }
compare read_only b3sum

# ---- case 2: restore -----------------------------------------------------------------------
log "case 2: restore"
cmd_s3m_restore() { echo "'$S3M' --repo '$R64' restore latest --volume v --target '$WORK/out-s3m.img' -o json"; }
check_s3m_restore() { same "$IMG" "$WORK/out-s3m.img"; rm -f "$WORK/out-s3m.img"; }
cmd_restic_restore() { echo "restic -r '$RR' restore latest --host bench --target '$WORK/out-restic'"; }
check_restic_restore() {
  RESTIC_RESTORE_DISK=$(du -sb --apparent-size "$WORK/out-restic/v.img" | cut -f1)/$(du -sB1 "$WORK/out-restic/v.img" | cut -f1)
  same "$IMG" "$WORK/out-restic/v.img"; rm -rf "$WORK/out-restic"
}
cmd_restic_dump() { echo "restic -r '$RR' dump latest --host bench v.img >'$WORK/out-dump.img'"; }
check_restic_dump() { same "$IMG" "$WORK/out-dump.img"; rm -f "$WORK/out-dump.img"; }
compare s3m_restore restic_restore restic_dump

# ---- case 5 (full part): the same image into repositories of other chunk sizes -------------------
log "case 5: full backups at other chunk sizes"
declare -A CB0 CO0 CB1 CO1 CB2 CO2 CT1 CT2
for c in $CHUNKS; do
  r=$WORK/repo-c$c
  "$S3M" --repo "$r" init -q --chunk-size "$c"
  bytes=$(jq -r .chunkSize "$r/config")
  CB0[$c]=$(repo_bytes "$r"); CO0[$c]=$(repo_objects "$r")
  if [[ $bytes == "$CHUNK_DEFAULT" ]]; then   # the main repository already has this one
    rm -rf "$r"; continue
  fi
  timed "s3m_full_$c" "'$S3M' --repo '$r' backup '$IMG' --volume v -o json"
  CB1[$c]=$(repo_bytes "$r"); CO1[$c]=$(repo_objects "$r"); CT1[$c]=${T[s3m_full_$c]}
done

# ---- case 3: incremental -------------------------------------------------------------------
log "case 3: $WRITES random 4 KiB writes, incremental"
$GEN writes "$IMG" --count "$WRITES" --block 4K --seed 2 --ranges "$WORK/changes.json"
DISTINCT=$(jq '.blockMetadata | length' "$WORK/changes.json")
# Every round starts from a copy of the repositories as the full backups left them.
cp -a "$R64" "$R64.base"; cp -a "$RR" "$RR.base"
setup_s3m_incr() { rm -rf "$R64" && cp -a "$R64.base" "$R64"; }
cmd_s3m_incr() { echo "'$S3M' --repo '$R64' backup '$IMG' --volume v --changed-ranges '$WORK/changes.json' -o json"; }
setup_restic_incr() { rm -rf "$RR" && cp -a "$RR.base" "$RR"; }
cmd_restic_incr() { echo "restic -r '$RR' backup --host bench --stdin --stdin-filename v.img --json <'$IMG' | tail -n 1"; }
compare s3m_incr restic_incr
rm -rf "$R64.base" "$RR.base"
B2_S=$(repo_bytes "$R64"); O2_S=$(repo_objects "$R64"); B2_R=$(repo_bytes "$RR")
# The incremental restores to the changed image (a correctness check, not timed against restic).
timed s3m_restore_incr "'$S3M' --repo '$R64' restore latest --volume v --target '$WORK/out-s3m2.img' -o json"
same "$IMG" "$WORK/out-s3m2.img"; rm -f "$WORK/out-s3m2.img"

log "case 5: incrementals at other chunk sizes"
for c in $CHUNKS; do
  r=$WORK/repo-c$c
  [[ -d $r ]] || continue
  timed "s3m_incr_$c" "'$S3M' --repo '$r' backup '$IMG' --volume v --changed-ranges '$WORK/changes.json' -o json"
  CB2[$c]=$(repo_bytes "$r"); CO2[$c]=$(repo_objects "$r"); CT2[$c]=${T[s3m_incr_$c]}
  rm -rf "$r"
done
rm -rf "$RR" "$R64" "$IMG"

# ---- case 4: sparse 1 TiB image ------------------------------------------------------------
log "case 4: sparse $BIG_SIZE image with $BIG_DATA of data"
BIG=$WORK/big.img
RB=$WORK/repo-big
$GEN image "$BIG" --size "$BIG_SIZE" --data "$BIG_DATA" --extent 1M --seed 3
"$S3M" --repo "$RB" init -q
BB0=$(repo_bytes "$RB"); BO0=$(repo_objects "$RB")
timed big_full "'$S3M' --repo '$RB' backup '$BIG' --volume big -o json"
BB1=$(repo_bytes "$RB"); BO1=$(repo_objects "$RB")
$GEN writes "$BIG" --count "$WRITES" --block 4K --seed 4 --ranges "$WORK/big-changes.json"
timed big_incr "'$S3M' --repo '$RB' backup '$BIG' --volume big --changed-ranges '$WORK/big-changes.json' -o json"
BB2=$(repo_bytes "$RB"); BO2=$(repo_objects "$RB")
rm -rf "$RB" "$BIG"

echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$RES/env.txt"

# ---- report --------------------------------------------------------------------------------
ok() { if awk "BEGIN { exit !($1) }"; then echo met; else echo "**missed**"; fi; }
DATA_BYTES=$(json s3m_full .bytesRead)
full_x=$(calc "${T[restic_full]} / ${T[s3m_full]}")
rfast=restic_restore; awk "BEGIN{exit !(${T[restic_dump]} < ${T[restic_restore]})}" && rfast=restic_dump
restore_x=$(calc "${T[$rfast]} / ${T[s3m_restore]}")
mem_r=$(calc "${M[s3m_full]} / ${M[restic_full]}")
mem_rr=$(calc "${M[s3m_restore]} / ${M[$rfast]}")
incr_x=$(calc "${T[restic_incr]} / ${T[s3m_incr]}")
incr_s=$((B2_S - B1_S)); incr_r=$((B2_R - B1_R))
big_meta=$(json big_incr .metadataBytesUploaded)
big_objs=$((BO1 - BO0)); big_stored=$((BB1 - BB0))
big_per4=$(calc "$big_objs / ($big_stored / 4194304)")
lim_x=$(calc "${T[b3sum]} / ${T[s3m_full]}")
{
  echo "### Environment"
  echo
  sed 's/^/    /' "$RES/env.txt"
  echo
  echo "Every timed command ran with cold page caches and its time includes a final \`sync\`."
  echo "s3mover/restic comparisons: $RUNS alternating rounds, medians shown (all rounds under Details)."
  echo "Chunk size of the main s3mover repository: $CHUNK_DEFAULT bytes."
  echo
  echo "### Targets"
  echo
  echo "| case | s3mover | restic | ratio | target | result |"
  echo "|---|---|---|---|---|---|"
  echo "| 1. full backup, $SIZE image / $DATA data | ${T[s3m_full]} s | ${T[restic_full]} s | ${full_x}× faster | ≥ 3× | $(ok "$full_x >= 3") |"
  echo "| 1. full backup peak RSS | $(rss s3m_full) MiB | $(rss restic_full) MiB | ${mem_r}× restic's | ≤ 1× | $(ok "$mem_r <= 1") |"
  echo "| 2. restore (restic: faster of restore ${T[restic_restore]} s / dump ${T[restic_dump]} s) | ${T[s3m_restore]} s | ${T[$rfast]} s (${rfast#restic_}) | ${restore_x}× faster | ≥ 2× | $(ok "$restore_x >= 2") |"
  echo "| 2. restore peak RSS | $(rss s3m_restore) MiB | $(rss $rfast) MiB | ${mem_rr}× restic's | (≤ 1×) | $(ok "$mem_rr <= 1") |"
  echo "| 3. incremental, $WRITES writes ($DISTINCT distinct 4 KiB blocks) | ${T[s3m_incr]} s | ${T[restic_incr]} s | ${incr_x}× faster | ≥ 20× | $(ok "$incr_x >= 20") |"
  echo "| 3. incremental, repository growth | $(mib $incr_s) MiB | $(mib $incr_r) MiB | $(calc "$incr_r / $incr_s" 1)× less | ≤ 128 MiB | $(ok "$incr_s <= 134217728") |"
  echo "| 3. incremental peak RSS | $(rss s3m_incr) MiB | $(rss restic_incr) MiB | $(calc "${M[s3m_incr]} / ${M[restic_incr]}")× restic's | – | – |"
  echo "| 4. $BIG_SIZE sparse, incremental metadata | $(mib "$big_meta" 2) MiB | n/a | – | ≤ 16 MiB | $(ok "$big_meta <= 16777216") |"
  echo "| 4. $BIG_SIZE sparse, full: objects per 4 MiB stored | $big_objs objects / $(mib $big_stored) MiB = $big_per4 | n/a | – | ≤ 1 | $(ok "$big_per4 <= 1") |"
  echo "| 6. full backup vs cold read + BLAKE3 (b3sum ${T[b3sum]} s, plain read ${T[read_only]} s) | $(calc "$IMG_BYTES / 1048576 / ${T[s3m_full]}" 0) MiB/s of image | – | $(calc "$lim_x * 100" 0)% of the limit | – | – |"
  echo
  echo "### Details"
  echo
  echo "| run | time (s): median (rounds) | peak RSS (MiB, median) | notes |"
  echo "|---|---|---|---|"
  echo "| s3mover full | $(tt s3m_full) | $(rss s3m_full) | read $(mib "$DATA_BYTES") MiB ($(json s3m_full .changeSource)), repository +$(mib $((B1_S - B0_S))) MiB in $((O1_S - O0_S)) objects |"
  echo "| restic full | $(tt restic_full) | $(rss restic_full) | read $(mib "$IMG_BYTES") MiB from stdin, repository +$(mib $((B1_R - B0_R))) MiB (restic data_added $(mib "$(json restic_full .data_added)") MiB) |"
  echo "| s3mover restore | $(tt s3m_restore) | $(rss s3m_restore) | $(mib "$(json s3m_restore .bytesWritten)") MiB written, $(mib "$(json s3m_restore .zeroBytes)") MiB left as holes; output equal to the image |"
  echo "| restic restore | $(tt restic_restore) | $(rss restic_restore) | output equal to the image; apparent/allocated bytes $RESTIC_RESTORE_DISK |"
  echo "| restic dump | $(tt restic_dump) | $(rss restic_dump) | output equal to the image |"
  echo "| s3mover incremental | $(tt s3m_incr) | $(rss s3m_incr) | read $(mib "$(json s3m_incr .bytesRead)") MiB, bytesUploaded $(mib "$(json s3m_incr .bytesUploaded)") MiB (metadata $(mib "$(json s3m_incr .metadataBytesUploaded)" 2) MiB), $((O2_S - O1_S)) new objects |"
  echo "| restic incremental | $(tt restic_incr) | $(rss restic_incr) | read $(mib "$IMG_BYTES") MiB from stdin, restic data_added $(mib "$(json restic_incr .data_added)") MiB |"
  echo "| s3mover restore of the incremental | $(tt s3m_restore_incr) | $(rss s3m_restore_incr) | output equal to the changed image |"
  echo "| $BIG_SIZE full ($(mib "$(json big_full .bytesRead)") MiB read, $(json big_full .changeSource)) | $(tt big_full) | $(rss big_full) | repository +$(mib $big_stored) MiB in $big_objs objects; objectsWritten $(json big_full .objectsWritten) |"
  echo "| $BIG_SIZE incremental | $(tt big_incr) | $(rss big_incr) | bytesUploaded $(mib "$(json big_incr .bytesUploaded)") MiB, metadataBytesUploaded $(mib "$big_meta" 2) MiB, repository +$(mib $((BB2 - BB1))) MiB in $((BO2 - BO1)) objects |"
  echo "| cat image > /dev/null | $(tt read_only) | $(rss read_only) | $(calc "$IMG_BYTES / 1048576 / ${T[read_only]}" 0) MiB/s |"
  echo "| b3sum image | $(tt b3sum) | $(rss b3sum) | $(calc "$IMG_BYTES / 1048576 / ${T[b3sum]}" 0) MiB/s (b3sum maps the file: its RSS is the page cache it touched) |"
  echo
  echo "### Chunk-size trade-off (case 1 full, then the case 3 incremental)"
  echo
  echo "| chunk size | full: time (s) | full: repository growth (MiB) | full: objects | incremental: time (s) | incremental: repository growth (MiB) | incremental: objects |"
  echo "|---|---|---|---|---|---|---|"
  for c in $CHUNKS; do
    if [[ -n ${CT1[$c]:-} ]]; then
      echo "| $c | ${CT1[$c]} | $(mib $((CB1[$c] - CB0[$c]))) | $((CO1[$c] - CO0[$c])) | ${CT2[$c]} | $(mib $((CB2[$c] - CB1[$c]))) | $((CO2[$c] - CO1[$c])) |"
    else
      echo "| $c (default) | ${T[s3m_full]} | $(mib $((B1_S - B0_S))) | $((O1_S - O0_S)) | ${T[s3m_incr]} | $(mib $incr_s) | $((O2_S - O1_S)) |"
    fi
  done
} >"$RES/report.md"
echo >&2
cat "$RES/report.md"
echo >&2
echo "raw outputs: $RES" >&2
