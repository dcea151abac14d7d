#!/usr/bin/env bash
# The Kubernetes end-to-end scenario of crates/cli/tests/k8s_e2e.rs against a real cluster:
# minikube with the CSI hostpath driver and its snapshot-metadata sidecar (Changed Block
# Tracking). NOT RUN in this repository's CI (no cluster can run there); see docs/kubernetes.md.
#
# Needs: minikube, kubectl, git, docker (or podman) and a release build of s3mover
# (cargo build --release -p s3mover). Usage: scripts/minikube-e2e.sh
set -euo pipefail

PROFILE=${PROFILE:-s3mover-e2e}
NS=${NS:-s3mover-e2e}
SNAPSHOTTER_VERSION=${SNAPSHOTTER_VERSION:-v8.2.0}
METADATA_VERSION=${METADATA_VERSION:-v1.0.0}
HOSTPATH_VERSION=${HOSTPATH_VERSION:-master}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/release/s3mover}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

say() { printf '\n== %s\n' "$*"; }
k() { kubectl --context "$PROFILE" "$@"; }

[ -x "$BIN" ] || { echo "build s3mover first: cargo build --release -p s3mover" >&2; exit 2; }

say "cluster"
minikube start -p "$PROFILE" --addons=volumesnapshots
say "snapshot CRDs and controller ($SNAPSHOTTER_VERSION)"
git clone --depth 1 --branch "$SNAPSHOTTER_VERSION" https://github.com/kubernetes-csi/external-snapshotter "$WORK/snapshotter"
k apply -k "$WORK/snapshotter/client/config/crd"
k apply -k "$WORK/snapshotter/deploy/kubernetes/snapshot-controller"
say "CBT CRD ($METADATA_VERSION)"
git clone --depth 1 --branch "$METADATA_VERSION" https://github.com/kubernetes-csi/external-snapshot-metadata "$WORK/metadata"
k apply -f "$WORK/metadata/client/config/crd/cbt.storage.k8s.io_snapshotmetadataservices.yaml"
say "hostpath driver with the snapshot-metadata sidecar"
git clone --depth 1 --branch "$HOSTPATH_VERSION" https://github.com/kubernetes-csi/csi-driver-host-path "$WORK/hostpath"
(cd "$WORK/hostpath" && kubectl config use-context "$PROFILE" && SNAPSHOT_METADATA_TESTS=true ./deploy/kubernetes-latest/deploy.sh)
k apply -f "$WORK/hostpath/examples/csi-storageclass.yaml"
k apply -f "$WORK/hostpath/examples/csi-snapshotclass.yaml"
k annotate volumesnapshotclass csi-hostpath-snapclass snapshot.storage.kubernetes.io/is-default-class=true --overwrite

say "mover image"
mkdir -p "$WORK/image"
cp "$BIN" "$WORK/image/s3mover"
cat > "$WORK/image/Dockerfile" <<'DOCKERFILE'
FROM debian:stable-slim
COPY s3mover /usr/local/bin/s3mover
ENTRYPOINT ["s3mover"]
DOCKERFILE
minikube -p "$PROFILE" image build -t s3mover:e2e "$WORK/image"

say "repository"
# The movers and this script open the same repository: an S3 bucket both can reach.
: "${S3MOVER_REPO:?set S3MOVER_REPO to an s3:// repository reachable from the cluster and from here}"
: "${S3MOVER_PASSWORD:?set S3MOVER_PASSWORD}"
"$BIN" init || true

say "namespace"
k create namespace "$NS"
sed "s/namespace: default/namespace: $NS/" "$ROOT/deploy/rbac/mover.yaml" | k apply -f -
k apply -f "$ROOT/deploy/rbac/orchestrator.yaml"
k create secret generic s3mover-repo -n "$NS" \
  --from-literal=S3MOVER_REPO="$S3MOVER_REPO" --from-literal=S3MOVER_PASSWORD="$S3MOVER_PASSWORD" \
  ${AWS_ACCESS_KEY_ID:+--from-literal=AWS_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID"} \
  ${AWS_SECRET_ACCESS_KEY:+--from-literal=AWS_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY"} \
  ${AWS_ENDPOINT_URL:+--from-literal=AWS_ENDPOINT_URL="$AWS_ENDPOINT_URL"}

say "a Block claim with data"
k apply -n "$NS" -f - <<'YAML'
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  accessModes: [ReadWriteOnce]
  volumeMode: Block
  storageClassName: csi-hostpath-sc
  resources: {requests: {storage: 64Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: writer}
spec:
  restartPolicy: Never
  containers:
    - name: w
      image: busybox
      command: [sh, -c, "dd if=/dev/urandom of=/dev/xvda bs=1M count=16 && sync"]
      volumeDevices: [{name: v, devicePath: /dev/xvda}]
  volumes: [{name: v, persistentVolumeClaim: {claimName: data}}]
YAML
k wait -n "$NS" --for=jsonpath='{.status.phase}'=Succeeded pod/writer --timeout=5m
k delete -n "$NS" pod writer --wait=true

export S3MOVER_MOVER_IMAGE=s3mover:e2e
"$BIN" k8s --context "$PROFILE" doctor -n "$NS" --pvc data
say "full backup"
"$BIN" k8s --context "$PROFILE" backup data -n "$NS" --image-pull-policy Never -o json | tee "$WORK/full.json"
say "change 5 blocks, delta backup"
# shellcheck disable=SC2016 # $i is expanded by the pod's shell
k run -n "$NS" writer2 --image=busybox --restart=Never --overrides='{"spec":{"containers":[{"name":"w","image":"busybox","command":["sh","-c","for i in 1 3 5 7 9; do dd if=/dev/urandom of=/dev/xvda bs=4096 seek=$i count=1 conv=notrunc; done; sync"],"volumeDevices":[{"name":"v","devicePath":"/dev/xvda"}]}],"volumes":[{"name":"v","persistentVolumeClaim":{"claimName":"data"}}]}}'
k wait -n "$NS" --for=jsonpath='{.status.phase}'=Succeeded pod/writer2 --timeout=5m
k delete -n "$NS" pod writer2 --wait=true
"$BIN" k8s --context "$PROFILE" backup data -n "$NS" --image-pull-policy Never -o json | tee "$WORK/delta.json"
grep -q '"changeSource": "cbt-delta"' "$WORK/delta.json"

say "checksum, disaster, restore, checksum"
sum() {
  k run -n "$NS" "sum-$1" --image=busybox --restart=Never --overrides='{"spec":{"containers":[{"name":"s","image":"busybox","command":["sh","-c","sha256sum /dev/xvda"],"volumeDevices":[{"name":"v","devicePath":"/dev/xvda"}]}],"volumes":[{"name":"v","persistentVolumeClaim":{"claimName":"data"}}]}}' >/dev/null
  k wait -n "$NS" --for=jsonpath='{.status.phase}'=Succeeded "pod/sum-$1" --timeout=5m >/dev/null
  k logs -n "$NS" "sum-$1" | cut -d' ' -f1
  k delete -n "$NS" pod "sum-$1" --wait=true >/dev/null
}
before=$(sum before)
k delete -n "$NS" pvc data --wait=true
"$BIN" k8s --context "$PROFILE" restore data -n "$NS" --image-pull-policy Never
after=$(sum after)
[ "$before" = "$after" ] || { echo "restored volume differs: $before != $after" >&2; exit 1; }
"$BIN" k8s --context "$PROFILE" cleanup --dry-run
echo "PASS: full, delta, restore byte-exact ($after)"
