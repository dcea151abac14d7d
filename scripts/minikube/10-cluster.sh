#!/usr/bin/env bash
# The cluster: minikube with the CSI hostpath driver and its snapshot-metadata sidecar — the
# external-snapshotter CRDs and snapshot controller, the SnapshotMetadataService CRD, the driver
# deployed with SNAPSHOT_METADATA_TESTS=true (the sidecar, its TLS certificate and the
# SnapshotMetadataService object), the StorageClass and the default VolumeSnapshotClass — and
# the mover image built into minikube.
#
# With S3MOVER_DEMO_CLUSTER=existing nothing is installed: the step checks that the current
# context's cluster has what the demo needs and says what is missing.
# shellcheck source-path=SCRIPTDIR source=00-env.sh
source "$(dirname "$0")/00-env.sh"

SNAPSHOTTER_VERSION="${SNAPSHOTTER_VERSION:-v8.2.0}"
METADATA_VERSION="${METADATA_VERSION:-v0.1.0}"
HOSTPATH_VERSION="${HOSTPATH_VERSION:-master}"
DRIVER=hostpath.csi.k8s.io

check_cluster() {
    say "checking the cluster"
    k get crd volumesnapshots.snapshot.storage.k8s.io >/dev/null ||
        die "no VolumeSnapshot CRD: install external-snapshotter's CRDs and controller"
    k get storageclass csi-hostpath-sc >/dev/null ||
        die "no StorageClass csi-hostpath-sc (the CSI hostpath driver's; see 10-cluster.sh)"
    if k get snapshotmetadataservice "$DRIVER" >/dev/null 2>&1; then
        echo "SnapshotMetadataService $DRIVER: backups read changed blocks only"
    else
        echo "no SnapshotMetadataService $DRIVER: backups read whole volumes (deduplicated)"
    fi
}

if [[ "$S3MOVER_DEMO_CLUSTER" == existing ]]; then
    check_cluster
    exit 0
fi

for tool in minikube kubectl git; do
    command -v "$tool" >/dev/null || die "needs $tool"
done

say "minikube profile $PROFILE"
if minikube status -p "$PROFILE" >/dev/null 2>&1; then
    echo "running"
else
    minikube start -p "$PROFILE" --cpus=4 --memory=8g --container-runtime=containerd
fi

clone() { # clone URL REF DIR: a shallow clone, kept between runs
    [[ -d "$3/.git" ]] || git clone --depth 1 --branch "$2" "$1" "$3"
}
mkdir -p "$DEMO_CACHE"

say "snapshot CRDs and controller ($SNAPSHOTTER_VERSION)"
clone https://github.com/kubernetes-csi/external-snapshotter "$SNAPSHOTTER_VERSION" \
    "$DEMO_CACHE/external-snapshotter-$SNAPSHOTTER_VERSION"
k apply -k "$DEMO_CACHE/external-snapshotter-$SNAPSHOTTER_VERSION/client/config/crd"
k apply -k "$DEMO_CACHE/external-snapshotter-$SNAPSHOTTER_VERSION/deploy/kubernetes/snapshot-controller"
k rollout status -n kube-system deployment/snapshot-controller --timeout=5m

say "SnapshotMetadataService CRD ($METADATA_VERSION)"
clone https://github.com/kubernetes-csi/external-snapshot-metadata "$METADATA_VERSION" \
    "$DEMO_CACHE/external-snapshot-metadata-$METADATA_VERSION"
k apply -f "$DEMO_CACHE/external-snapshot-metadata-$METADATA_VERSION/client/config/crd/cbt.storage.k8s.io_snapshotmetadataservices.yaml"

say "CSI hostpath driver with the snapshot-metadata sidecar ($HOSTPATH_VERSION)"
clone https://github.com/kubernetes-csi/csi-driver-host-path "$HOSTPATH_VERSION" \
    "$DEMO_CACHE/csi-driver-host-path-$HOSTPATH_VERSION"
if k get csidriver "$DRIVER" >/dev/null 2>&1 && k get snapshotmetadataservice "$DRIVER" >/dev/null 2>&1; then
    echo "already deployed"
else
    # deploy.sh creates the sidecar's TLS certificate and Secret and the
    # SnapshotMetadataService object when SNAPSHOT_METADATA_TESTS is true; it uses the
    # current context.
    k config use-context "$KUBE_CONTEXT"
    (cd "$DEMO_CACHE/csi-driver-host-path-$HOSTPATH_VERSION" &&
        SNAPSHOT_METADATA_TESTS=true ./deploy/kubernetes-latest/deploy.sh)
fi
k rollout status -n default statefulset/csi-hostpathplugin --timeout=5m
k apply -f "$DEMO_CACHE/csi-driver-host-path-$HOSTPATH_VERSION/examples/csi-storageclass.yaml"
k apply -f "$DEMO_CACHE/csi-driver-host-path-$HOSTPATH_VERSION/examples/csi-snapshotclass.yaml"
k annotate volumesnapshotclass csi-hostpath-snapclass \
    snapshot.storage.kubernetes.io/is-default-class=true --overwrite

say "mover image $S3MOVER_MOVER_IMAGE"
[[ -x "$S3MOVER" ]] || die "no s3mover at $S3MOVER: cargo build --release -p s3mover"
image_dir="$DEMO_CACHE/image"
mkdir -p "$image_dir"
cp "$S3MOVER" "$image_dir/s3mover"
cat >"$image_dir/Containerfile" <<'CONTAINERFILE'
FROM debian:stable-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY s3mover /usr/local/bin/s3mover
ENTRYPOINT ["/usr/local/bin/s3mover"]
CONTAINERFILE
minikube -p "$PROFILE" image build -t "$S3MOVER_MOVER_IMAGE" -f Containerfile "$image_dir"

check_cluster
