#!/usr/bin/env bash
# The incremental backup: with Changed Block Tracking the mover asks the SnapshotMetadataService
# for the blocks that changed since the kept base snapshot and reads only those; the result says
# `"changeSource": "cbt-delta"`. Without a SnapshotMetadataService it reads the volume and
# uploads only what changed (hash-compare).
# shellcheck source-path=SCRIPTDIR source=00-env.sh
source "$(dirname "$0")/00-env.sh"

say "incremental backup of $DEMO_NS/$PVC"
result="$(s3m_k8s backup "$PVC" -n "$DEMO_NS" -o json)"
echo "$result"
grep -q '"status": "ok"' <<<"$result" || die "the backup failed"
if k get snapshotmetadataservice hostpath.csi.k8s.io >/dev/null 2>&1; then
    grep -q '"changeSource": "cbt-delta"' <<<"$result" ||
        die "the cluster has Changed Block Tracking but the backup was not a CBT delta"
fi
say "the claim's backups"
with_repo "$S3MOVER" k8s ${KUBE_CONTEXT:+--context "$KUBE_CONTEXT"} backups "$PVC" -n "$DEMO_NS"
