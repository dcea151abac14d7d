#!/usr/bin/env bash
# The workload writes again: five 4 KiB blocks and one MiB further in, so the next backup has a
# small, known change to read.
# shellcheck source-path=SCRIPTDIR source=00-env.sh
source "$(dirname "$0")/00-env.sh"

say "block-writer: 5 blocks of 4 KiB and 1 MiB at 8 MiB"
run_pod block-writer-more "for i in 1 3 5 7 9; do dd if=/dev/urandom of=/dev/xvda bs=4096 seek=\$i count=1 conv=notrunc,fsync 2>/dev/null; done; dd if=/dev/urandom of=/dev/xvda bs=1048576 seek=8 count=1 conv=notrunc,fsync"
