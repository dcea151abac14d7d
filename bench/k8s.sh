#!/usr/bin/env bash
# Benchmark: what `s3mover k8s backup` of a Block claim on the simulated cluster adds to
# `s3mover backup` of the same change (crates/cli/tests/k8s_bench.rs says how it is measured).
#
#   bench/k8s.sh [REPORT.json]      (default: bench-work/k8s-bench.json)
#
# Runs twice, once per kind of storage under the simulated driver (BENCH_K8S_STORAGES, default
# "copy reflink"): `copy` (images on this machine's filesystem: snapshots and clones are full
# copies) and `reflink` (a loop-mounted XFS: they share blocks, as on copy-on-write storage;
# needs mkfs.xfs). Reports go to REPORT with -copy / -reflink before .json.
#
# Needs root, bubblewrap, losetup and kubectl, as the end-to-end tests do. Builds with
# `--release` (BENCH_PROFILE=dev: the test profile, dependencies optimized). Knobs (environment): BENCH_K8S_SIZE (bytes, default 1 GiB), BENCH_K8S_WRITES
# (default 2000), BENCH_K8S_ROUNDS (default 3; the report gives medians).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPORT=${1:-$ROOT/bench-work/k8s-bench.json}
mkdir -p "$(dirname "$REPORT")"
REPORT=$(cd "$(dirname "$REPORT")" && pwd)/$(basename "$REPORT")
cd "$ROOT"
profile=(--release)
[[ ${BENCH_PROFILE:-release} == dev ]] && profile=()
for storage in ${BENCH_K8S_STORAGES:-copy reflink}; do
    out=${REPORT%.json}-$storage.json
    BENCH_K8S_STORAGE=$storage BENCH_K8S_JSON=$out cargo test "${profile[@]}" -p s3mover \
        --test k8s_bench -- --ignored --nocapture --test-threads 1
    echo "report: $out" >&2
done
