# shellcheck shell=bash
# Settings and helpers every step of the demo sources; not run by itself.
#
# The demo: scripts/minikube/NN-*.sh, run in order (or scripts/minikube/run-all.sh). Each step is
# idempotent: running it again is safe, and a step whose result is already there says so and
# moves on. Settings (environment):
#
#   S3MOVER_DEMO_CLUSTER  minikube (default): 10-cluster.sh starts minikube with the CSI hostpath
#                         driver and its snapshot-metadata sidecar. existing: use the cluster of
#                         the current kubeconfig context as it is (it needs a CSI driver with
#                         snapshots; Changed Block Tracking when its SnapshotMetadataService
#                         exists) — 10-cluster.sh then only checks it.
#   PROFILE               minikube profile (default s3mover-demo)
#   DEMO_NS               namespace of the workload (default s3mover-demo)
#   S3MOVER               the s3mover binary (default: s3mover on PATH, else
#                         target/release/s3mover)
#   S3MOVER_MOVER_IMAGE   image of the mover pods (default s3mover:demo, which 10-cluster.sh
#                         builds into minikube; with an existing cluster, an image it can pull)
#   WORKLOAD_IMAGE        image with sh, dd and sha256sum (default busybox:1.37.0)
#   S3MOVER_REPO, S3MOVER_PASSWORD, AWS_*
#                         when S3MOVER_REPO is set, 20-s3.sh uses that repository (a bucket
#                         the cluster's pods and this machine both reach) instead of deploying
#                         Garage in the cluster (deploy/overlays/garage-demo)
set -euo pipefail

DEMO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$DEMO_DIR/../.." && pwd)"
S3MOVER_DEMO_CLUSTER="${S3MOVER_DEMO_CLUSTER:-minikube}"
PROFILE="${PROFILE:-s3mover-demo}"
DEMO_NS="${DEMO_NS:-s3mover-demo}"
SYSTEM_NS=s3mover-system
PVC="${PVC:-block-writer-data}"
VOLUME_SIZE="${VOLUME_SIZE:-64Mi}"
WORKLOAD_IMAGE="${WORKLOAD_IMAGE:-busybox:1.37.0}"
S3MOVER_MOVER_IMAGE="${S3MOVER_MOVER_IMAGE:-s3mover:demo}"
export S3MOVER_MOVER_IMAGE
# Where clones of the driver's repositories are kept between runs.
DEMO_CACHE="${DEMO_CACHE:-$ROOT/target/minikube-demo}"

case "$S3MOVER_DEMO_CLUSTER" in
    minikube) KUBE_CONTEXT="${KUBE_CONTEXT:-$PROFILE}" ;;
    existing) KUBE_CONTEXT="${KUBE_CONTEXT:-}" ;;
    *)
        echo "S3MOVER_DEMO_CLUSTER must be minikube or existing, not '$S3MOVER_DEMO_CLUSTER'" >&2
        exit 2
        ;;
esac

if [[ -z "${S3MOVER:-}" ]]; then
    S3MOVER="$(command -v s3mover || echo "$ROOT/target/release/s3mover")"
fi

say() { printf '\n== %s: %s\n' "$(basename "$0" .sh)" "$*"; }
die() {
    echo "$(basename "$0"): $*" >&2
    exit 1
}

# kubectl on the demo's cluster.
k() {
    if [[ -n "$KUBE_CONTEXT" ]]; then
        kubectl --context "$KUBE_CONTEXT" "$@"
    else
        kubectl "$@"
    fi
}

# s3mover k8s … on the demo's cluster.
s3m_k8s() {
    [[ -x "$S3MOVER" ]] || die "no s3mover at $S3MOVER: cargo build --release -p s3mover, or set S3MOVER"
    if [[ -n "$KUBE_CONTEXT" ]]; then
        "$S3MOVER" k8s --context "$KUBE_CONTEXT" "$@"
    else
        "$S3MOVER" k8s "$@"
    fi
}

# Applies a manifest read from stdin (create or update: safe to repeat).
apply() { k apply -f -; }

# True when the in-cluster Garage holds the repository (S3MOVER_REPO was not given).
garage_repo() { [[ -z "${S3MOVER_REPO:-}" ]]; }

# Runs "$@" with the repository's settings in the environment, for commands that run on this
# machine. The in-cluster Garage is reached through a port-forward for the command's duration;
# a repository given in S3MOVER_REPO is used as it is.
with_repo() {
    if ! garage_repo; then
        "$@"
        return
    fi
    local port pid status=0
    repo_key() { k get secret s3mover-repo -n "$SYSTEM_NS" -o "jsonpath={.data.$1}" | base64 -d; }
    port="${GARAGE_LOCAL_PORT:-39000}"
    k port-forward -n "$SYSTEM_NS" svc/garage-demo "$port:3900" >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 50); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.2
    done
    S3MOVER_REPO="$(secret S3MOVER_REPO)" S3MOVER_PASSWORD="$(secret S3MOVER_PASSWORD)" \
        AWS_ACCESS_KEY_ID="$(repo_key AWS_ACCESS_KEY_ID)" \
        AWS_SECRET_ACCESS_KEY="$(repo_key AWS_SECRET_ACCESS_KEY)" AWS_REGION=garage \
        AWS_ENDPOINT_URL="http://127.0.0.1:$port" "$@" || status=$?
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    return "$status"
}

# run_pod NAME SCRIPT: runs SCRIPT with sh in a pod of the workload image with the claim as the
# raw device /dev/xvda, waits for it to end, prints its log and deletes it. A pod of that name
# left by an earlier run is deleted first.
run_pod() {
    local name="$1" script="$2" phase=""
    k delete pod "$name" -n "$DEMO_NS" --ignore-not-found --wait=true >/dev/null
    apply >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: $name
  namespace: $DEMO_NS
  labels: {app.kubernetes.io/part-of: s3mover-demo}
spec:
  restartPolicy: Never
  containers:
    - name: main
      image: $WORKLOAD_IMAGE
      command: [sh, -c, '$script']
      volumeDevices: [{name: data, devicePath: /dev/xvda}]
  volumes: [{name: data, persistentVolumeClaim: {claimName: $PVC}}]
YAML
    for _ in $(seq 600); do
        phase="$(k get pod "$name" -n "$DEMO_NS" -o 'jsonpath={.status.phase}')"
        [[ "$phase" == Succeeded || "$phase" == Failed ]] && break
        sleep 0.5
    done
    k logs "$name" -n "$DEMO_NS"
    k delete pod "$name" -n "$DEMO_NS" --wait=true >/dev/null
    [[ "$phase" == Succeeded ]] || die "pod $name ended $phase"
}

# The SHA-256 of the whole claim, read by a pod.
volume_sha256() {
    run_pod "checksum-$1" 'sha256sum /dev/xvda' | awk '/\/dev\/xvda/ {print $1}'
}
