#!/usr/bin/env bash
# The disaster: the claim is deleted (its volume goes with it: reclaim policy Delete). First the
# volume's SHA-256 is recorded in ConfigMap s3mover-demo-checksum, for 90-verify.sh. When the
# claim is already gone, the checksum recorded before is kept.
# shellcheck source-path=SCRIPTDIR source=00-env.sh
source "$(dirname "$0")/00-env.sh"

if ! k get pvc "$PVC" -n "$DEMO_NS" >/dev/null 2>&1; then
    say "claim $DEMO_NS/$PVC is already gone"
    exit 0
fi
say "checksum of $DEMO_NS/$PVC"
sum="$(volume_sha256 before)"
[[ -n "$sum" ]] || die "no checksum"
echo "sha256 $sum"
k create configmap s3mover-demo-checksum -n "$DEMO_NS" --from-literal=sha256="$sum" \
    --dry-run=client -o yaml | apply
say "deleting claim $DEMO_NS/$PVC"
k delete pvc "$PVC" -n "$DEMO_NS" --wait=true
