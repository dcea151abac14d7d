#!/usr/bin/env bash
# Removes the demo: its namespace (the claim, the kept base snapshot, the checksum). With
# minikube (S3MOVER_DEMO_CLUSTER=minikube) the whole profile is deleted; with an existing
# cluster s3mover's installation (s3mover-system) and the repository's data are left as they are.
# shellcheck source-path=SCRIPTDIR source=00-env.sh
source "$(dirname "$0")/00-env.sh"

if [[ "$S3MOVER_DEMO_CLUSTER" == minikube ]]; then
    say "deleting minikube profile $PROFILE"
    minikube delete -p "$PROFILE"
    exit 0
fi
say "deleting namespace $DEMO_NS"
k delete namespace "$DEMO_NS" --ignore-not-found --wait=true
