#!/usr/bin/env bash
# Benchmark of `s3mover forget --prune` against `restic forget --prune` on the same history
# (issue #5, "Speed"; results in docs/benchmarks-prune.md).
#
#   bench/prune.sh [WORKDIR]        (default WORKDIR: <repo>/bench-work/prune, gitignored)
#
# 1. A volume image of PRUNE_SIZE (default 4 GiB) of incompressible pseudo-random data (AES-CTR
#    keyed by a fixed seed, bench/gen.py), backed up PRUNE_ROUNDS times (default 100: one full
#    backup, then incrementals) by s3mover (encrypted repository, default 64 KiB chunks,
#    `--changed-ranges` from a ranges file of the round's writes) and by restic
#    (`backup --stdin`, local repository). Before every incremental PRUNE_CHANGE_PCT (1 %) of
#    the volume is overwritten with new random data in random, aligned PRUNE_EXTENT-sized
#    writes (default 1 MiB; fixed seed per round). See docs/benchmarks-prune.md for why the
#    change unit is 1 MiB and not 4 KiB.
# 2. Timed, each from cold caches, peak RSS from /usr/bin/time -v:
#      restic forget --keep-last 10 --prune          (a restic backup is started beside it)
#      s3mover forget --keep-last 10 --prune --grace 0s       (alone)
#      the same on an identical copy of the repository, with one more s3mover backup running
#      beside it; that backup is then restored and compared byte for byte with the image.
#
# Knobs (environment): PRUNE_SIZE=4G PRUNE_ROUNDS=100 PRUNE_CHANGE_PCT=1 PRUNE_EXTENT=1M
#   PRUNE_KEEP_LAST=10 PRUNE_SKIP_HISTORY=1 (reuse the history of an earlier run in WORKDIR)
#   PRUNE_KEEP=1 (keep the image and the two history repositories, ~18 GB, for PRUNE_SKIP_HISTORY;
#   the pruned copies are always removed)
#   PRUNE_S3MOVER=PATH (measure this binary instead of building the checkout)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${1:-$ROOT/bench-work/prune}
SIZE=${PRUNE_SIZE:-4G}
ROUNDS=${PRUNE_ROUNDS:-100}
PCT=${PRUNE_CHANGE_PCT:-1}
EXTENT=${PRUNE_EXTENT:-1M}
KEEP_LAST=${PRUNE_KEEP_LAST:-10}
GEN="python3 $ROOT/bench/gen.py"

log() { printf '\n== %s  [%s, load %s]\n' "$*" "$(date +%T)" "$(cut -d' ' -f1-3 /proc/loadavg)" >&2; }
die() { echo "prune.sh: $*" >&2; exit 1; }
bytes() { python3 -c "import sys; s=sys.argv[1].upper().removesuffix('IB').removesuffix('B'); m={'K':1<<10,'M':1<<20,'G':1<<30,'T':1<<40}; print(int(s[:-1])*m[s[-1]] if s[-1] in m else int(s))" "$1"; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
now_ms() { date +%s%3N; }
# field FILE: wall seconds and peak RSS (MiB) from a /usr/bin/time -v report
wall_s() { awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$1"; }
rss_mib() { awk -F': ' '/Maximum resident set size/ {printf "%.1f", $2/1024}' "$1"; }

[[ $(id -u) == 0 ]] || die "run as root (dropping page caches needs it)"
command -v restic >/dev/null || die "restic is missing: apt-get install restic"
command -v openssl >/dev/null || die "openssl is missing (the data generator uses it)"
[[ -x /usr/bin/time ]] || apt-get install -y time >/dev/null

mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
REV="$(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- crates Cargo.toml Cargo.lock || echo ' + uncommitted changes')"
mkdir -p "$WORK/bin"
if [[ -n ${PRUNE_S3MOVER:-} ]]; then
  # A binary built earlier (PRUNE_S3MOVER=path; its revision is read from path's REV file if any).
  if [[ $(realpath "$PRUNE_S3MOVER") != $(realpath -m "$WORK/bin/s3mover") ]]; then
    cp "$PRUNE_S3MOVER" "$WORK/bin/s3mover"
    cp "$(dirname "$PRUNE_S3MOVER")/REV" "$WORK/bin/REV" 2>/dev/null || echo "unknown (given binary)" >"$WORK/bin/REV"
  fi
elif [[ ${PRUNE_SKIP_HISTORY:-0} != 1 ]]; then
  log "building s3mover (release) at $REV"
  (cd "$ROOT" && cargo build --release -p s3mover)
  # A frozen copy: a rebuild in the tree during the run cannot change what is measured.
  cp "${CARGO_TARGET_DIR:-$ROOT/target}/release/s3mover" "$WORK/bin/s3mover"
  echo "$REV" >"$WORK/bin/REV"
fi
S3M=$WORK/bin/s3mover
RES=$WORK/results
mkdir -p "$RES"

export S3MOVER_PASSWORD=bench-password RESTIC_PASSWORD=bench-password
S3REPO=$WORK/repo-s3m
RREPO=$WORK/repo-restic
IMG=$WORK/v.img
SIZE_B=$(bytes "$SIZE")
EXTENT_B=$(bytes "$EXTENT")
COUNT=$(( (SIZE_B * PCT / 100 + EXTENT_B - 1) / EXTENT_B ))

cleanup() {
  rm -rf "$WORK"/out.img "$WORK"/p-s3m-alone* "$WORK"/p-s3m-beside "$WORK"/p-restic*
  [[ ${PRUNE_KEEP:-0} == 1 ]] && return
  rm -rf "$WORK"/v.img "$S3REPO" "$RREPO"
}
trap cleanup EXIT

# ---- 1. history ----------------------------------------------------------------------------
if [[ ${PRUNE_SKIP_HISTORY:-0} != 1 ]]; then
  rm -rf "$S3REPO" "$RREPO" "$S3REPO"-* "$IMG" "$RES" && mkdir -p "$RES"
  log "image: $SIZE of seeded random data"
  $GEN image "$IMG" --size "$SIZE" --data "$SIZE" --extent 1M --seed 1
  "$S3M" --repo "$S3REPO" -q init
  restic -r "$RREPO" init -q >/dev/null
  echo "round s3mover_s restic_s change_s" >"$RES/rounds.txt"
  T_HIST=$(now_ms)
  for ((i = 0; i < ROUNDS; i++)); do
    t0=$(now_ms)
    ranges=()
    if ((i > 0)); then
      $GEN writes "$IMG" --count "$COUNT" --block "$EXTENT" --seed $((1000 + i)) \
        --ranges "$WORK/ranges.json" 2>/dev/null
      ranges=(--changed-ranges "$WORK/ranges.json")
    fi
    t1=$(now_ms)
    "$S3M" --repo "$S3REPO" -q backup "$IMG" --volume v "${ranges[@]}"
    t2=$(now_ms)
    restic -r "$RREPO" backup -q --stdin --stdin-filename v.img <"$IMG"
    t3=$(now_ms)
    printf '%d %.2f %.2f %.2f\n' "$i" "$((t2 - t1))e-3" "$((t3 - t2))e-3" "$((t1 - t0))e-3" \
      >>"$RES/rounds.txt"
    ((i % 10 == 0)) && log "round $i: s3mover $((t2 - t1))ms, restic $((t3 - t2))ms"
  done
  echo "history_seconds $((($(now_ms) - T_HIST) / 1000))" >"$RES/history.txt"
fi
{
  echo "rounds $ROUNDS size $SIZE change ${PCT}% in $COUNT writes of $EXTENT"
  echo "s3mover_backups $("$S3M" --repo "$S3REPO" -q -o json backups | python3 -c 'import json,sys; d=json.load(sys.stdin); print(len(d if isinstance(d,list) else d.get("backups",[])))')"
  echo "restic_snapshots $(restic -r "$RREPO" snapshots --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')"
  echo "s3mover_repo_bytes_before $(du -sb "$S3REPO" | cut -f1)"
  echo "restic_repo_bytes_before $(du -sb "$RREPO" | cut -f1)"
} | tee "$RES/before.txt" >&2

# Identical copies to prune (hard links: every tool writes new files and renames or deletes,
# never rewrites a file in place), so that the history can be reused with PRUNE_SKIP_HISTORY.
rm -rf "$WORK"/p-s3m-alone* "$WORK/p-s3m-beside" "$WORK"/p-restic*
cp -al "$S3REPO" "$WORK/p-s3m-alone"
cp -al "$S3REPO" "$WORK/p-s3m-beside"
cp -al "$S3REPO" "$WORK/p-s3m-alone-last"
cp -al "$RREPO" "$WORK/p-restic"
cp -al "$RREPO" "$WORK/p-restic-last"
# The restic repositories' lock files must not be shared with the copies.
for copy in "$WORK/p-restic" "$WORK/p-restic-last"; do
  rm -rf "$copy/locks" && mkdir "$copy/locks"
done

# ---- 2a. restic forget --prune (a restic backup is attempted beside it) ---------------------
log "restic forget --keep-last $KEEP_LAST --prune"
drop_caches
/usr/bin/time -v -o "$RES/restic-prune.time" \
  restic -r "$WORK/p-restic" forget --keep-last "$KEEP_LAST" --prune >"$RES/restic-prune.out" 2>&1 &
pid_prune=$!
sleep 3
set +e
restic -r "$WORK/p-restic" backup -q --stdin --stdin-filename v.img <"$IMG" \
  >"$RES/restic-beside.out" 2>&1
echo "restic_backup_beside_exit $? ($(head -c 200 "$RES/restic-beside.out" | tr '\n' ' '))" >"$RES/restic-beside.txt"
wait "$pid_prune"
rc=$?
set -e
[[ $rc == 0 ]] || die "restic prune failed: $(tail "$RES/restic-prune.out")"
echo "load_after $(cut -d' ' -f1-3 /proc/loadavg)" >>"$RES/restic-prune.time"

# ---- 2b. s3mover forget --prune, alone -----------------------------------------------------
log "s3mover forget --keep-last $KEEP_LAST --prune --grace 0s (alone)"
drop_caches
/usr/bin/time -v -o "$RES/s3m-alone.time" \
  "$S3M" --repo "$WORK/p-s3m-alone" -o json forget --keep-last "$KEEP_LAST" --prune --grace 0s \
  >"$RES/s3m-alone.json"
echo "load_after $(cut -d' ' -f1-3 /proc/loadavg)" >>"$RES/s3m-alone.time"

# ---- 2c. s3mover forget --prune with a backup beside it -------------------------------------
log "s3mover forget --prune with a backup beside it"
$GEN writes "$IMG" --count "$COUNT" --block "$EXTENT" --seed 999999 --ranges "$WORK/ranges.json" 2>/dev/null
drop_caches
t_p0=$(now_ms)
/usr/bin/time -v -o "$RES/s3m-beside.time" \
  "$S3M" --repo "$WORK/p-s3m-beside" -o json forget --keep-last "$KEEP_LAST" --prune --grace 0s \
  >"$RES/s3m-beside.json" 2>"$RES/s3m-beside.err" &
pid_prune=$!
sleep "${PRUNE_BACKUP_DELAY:-1}"
t_b0=$(now_ms)
set +e
/usr/bin/time -v -o "$RES/s3m-backup-beside.time" \
  "$S3M" --repo "$WORK/p-s3m-beside" -o json backup "$IMG" --volume v \
  --changed-ranges "$WORK/ranges.json" >"$RES/s3m-backup-beside.json" 2>"$RES/s3m-backup-beside.err"
rc_b=$?
t_b1=$(now_ms)
wait "$pid_prune"
rc_p=$?
t_p1=$(now_ms)
set -e
{
  echo "prune_exit $rc_p prune_start_ms 0 prune_end_ms $((t_p1 - t_p0))"
  echo "backup_exit $rc_b backup_start_ms $((t_b0 - t_p0)) backup_end_ms $((t_b1 - t_p0))"
  echo "load_after $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$RES/beside.txt" >&2
[[ $rc_p == 0 ]] || die "s3mover prune beside a backup failed: $(cat "$RES/s3m-beside.err")"
[[ $rc_b == 0 ]] || die "s3mover backup beside prune failed: $(cat "$RES/s3m-backup-beside.err")"
ID=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$RES/s3m-backup-beside.json")
log "restore $ID and compare"
"$S3M" --repo "$WORK/p-s3m-beside" -q restore "$ID" --target "$WORK/out.img"
if cmp "$IMG" "$WORK/out.img"; then echo "restore_cmp identical" ; else echo "restore_cmp DIFFERENT"; fi \
  | tee "$RES/restore.txt" >&2
rm -f "$WORK/out.img"
"$S3M" --repo "$WORK/p-s3m-beside" check >"$RES/s3m-check.out" 2>&1 \
  && echo "check ok" >>"$RES/restore.txt" || echo "check FAILED" >>"$RES/restore.txt"

# ---- 2d. both prunes again, alone, last ------------------------------------------------------
# The first prune of a run follows the history's writes; these repeat restic's and s3mover's
# prunes (alone) at the end of the run on copies of their own, to show how much the order moved.
log "restic forget --prune again (alone, last)"
drop_caches
/usr/bin/time -v -o "$RES/restic-prune-last.time" \
  restic -r "$WORK/p-restic-last" forget --keep-last "$KEEP_LAST" --prune >"$RES/restic-prune-last.out" 2>&1 \
  || die "restic prune (last) failed: $(tail "$RES/restic-prune-last.out")"
log "s3mover forget --prune again (alone, last)"
drop_caches
/usr/bin/time -v -o "$RES/s3m-alone-last.time" \
  "$S3M" --repo "$WORK/p-s3m-alone-last" -o json forget --keep-last "$KEEP_LAST" --prune --grace 0s \
  >"$RES/s3m-alone-last.json"

{
  echo "s3mover_repo_bytes_after_alone $(du -sb "$WORK/p-s3m-alone" | cut -f1)"
  echo "restic_repo_bytes_after $(du -sb "$WORK/p-restic" | cut -f1)"
} | tee "$RES/after.txt" >&2

# ---- summary -------------------------------------------------------------------------------
r_t=$(wall_s "$RES/restic-prune.time"); r_m=$(rss_mib "$RES/restic-prune.time")
a_t=$(wall_s "$RES/s3m-alone.time"); a_m=$(rss_mib "$RES/s3m-alone.time")
b_t=$(wall_s "$RES/s3m-beside.time"); b_m=$(rss_mib "$RES/s3m-beside.time")
{
  echo "s3mover $(cat "$WORK/bin/REV"), $(restic version | cut -d' ' -f1-2)"
  printf '%-46s %9s %10s\n' case wall_s peak_MiB
  printf '%-46s %9s %10s\n' "restic forget --prune" "$r_t" "$r_m"
  printf '%-46s %9s %10s\n' "s3mover forget --prune (alone)" "$a_t" "$a_m"
  printf '%-46s %9s %10s\n' "s3mover forget --prune (backup beside)" "$b_t" "$b_m"
  printf '%-46s %9s %10s\n' "s3mover backup beside the prune" \
    "$(wall_s "$RES/s3m-backup-beside.time")" "$(rss_mib "$RES/s3m-backup-beside.time")"
  printf '%-46s %9s %10s\n' "restic forget --prune (again, last)" \
    "$(wall_s "$RES/restic-prune-last.time")" "$(rss_mib "$RES/restic-prune-last.time")"
  printf '%-46s %9s %10s\n' "s3mover forget --prune (again, alone, last)" \
    "$(wall_s "$RES/s3m-alone-last.time")" "$(rss_mib "$RES/s3m-alone-last.time")"
  python3 - "$(wall_s "$RES/restic-prune-last.time")" "$(wall_s "$RES/s3m-alone-last.time")" <<'EOF'
import sys
r, a = map(float, sys.argv[1:])
print(f"speed-up vs restic, both again at the end, alone: {r/a:.2f}x")
EOF
  python3 - "$r_t" "$r_m" "$a_t" "$a_m" "$b_t" "$b_m" <<'EOF'
import sys
r_t, r_m, a_t, a_m, b_t, b_m = map(float, sys.argv[1:])
print(f"speed-up vs restic: alone {r_t/a_t:.2f}x, backup beside {r_t/b_t:.2f}x (target >= 3x)")
print(f"peak memory vs restic: alone {a_m/r_m:.2f}, backup beside {b_m/r_m:.2f} (target <= 0.5)")
EOF
  cat "$RES/beside.txt" "$RES/restore.txt" "$RES/restic-beside.txt"
} | tee "$RES/summary.txt"
