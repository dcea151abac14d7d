#!/usr/bin/env bash
# Runs the demo's steps in order, from the cluster to the byte check. 99-cleanup.sh is not run:
# run it when you are done looking.
set -euo pipefail
dir="$(cd "$(dirname "$0")" && pwd)"
for step in "$dir"/[1-9][0-9]-*.sh; do
    [[ "$(basename "$step")" == 99-* ]] && continue
    bash "$step"
done
