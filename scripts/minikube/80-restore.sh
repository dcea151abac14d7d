#!/usr/bin/env bash
# The restore: s3mover creates the claim again (same name, size, mode and class, from what the
# backup recorded) and fills it from the repository in a mover pod. A claim that is there
# already is left alone.
# shellcheck source-path=SCRIPTDIR source=00-env.sh
source "$(dirname "$0")/00-env.sh"

if k get pvc "$PVC" -n "$DEMO_NS" >/dev/null 2>&1; then
    say "claim $DEMO_NS/$PVC exists: nothing to restore"
    exit 0
fi
say "restore of $DEMO_NS/$PVC from its latest backup"
with_repo "$S3MOVER" k8s ${KUBE_CONTEXT:+--context "$KUBE_CONTEXT"} restore "$PVC" -n "$DEMO_NS"
k wait -n "$DEMO_NS" --for=jsonpath='{.status.phase}'=Bound "pvc/$PVC" --timeout=5m
