#!/usr/bin/env bash
# The first backup: s3mover snapshots the claim, mounts the snapshot as a temporary Block claim
# in a mover pod and uploads the blocks the CSI driver reports allocated (CBT), or the whole
# volume deduplicated without a SnapshotMetadataService. Running it again makes another backup
# (an incremental one: the previous snapshot is kept as its base).
# shellcheck source-path=SCRIPTDIR source=00-env.sh
source "$(dirname "$0")/00-env.sh"

say "doctor"
s3m_k8s doctor -n "$DEMO_NS" --pvc "$PVC"
say "backup of $DEMO_NS/$PVC"
result="$(s3m_k8s backup "$PVC" -n "$DEMO_NS" -o json)"
echo "$result"
grep -q '"status": "ok"' <<<"$result" || die "the backup failed"
