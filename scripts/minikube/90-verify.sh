#!/usr/bin/env bash
# The byte check: the restored claim's SHA-256, read by a pod, against the one 70-disaster.sh
# recorded before deleting it; and nothing temporary of s3mover's left in the cluster.
# shellcheck source-path=SCRIPTDIR source=00-env.sh
source "$(dirname "$0")/00-env.sh"

expected="$(k get configmap s3mover-demo-checksum -n "$DEMO_NS" -o 'jsonpath={.data.sha256}')"
[[ -n "$expected" ]] || die "no recorded checksum: run 70-disaster.sh first"
say "checksum of the restored $DEMO_NS/$PVC"
got="$(volume_sha256 after)"
echo "before the disaster: $expected"
echo "after the restore:   $got"
[[ "$got" == "$expected" ]] || die "the restored volume differs from the backed-up one"
say "nothing temporary left"
s3m_k8s cleanup --dry-run
echo "PASS: the restored claim is byte-for-byte the backed-up one"
