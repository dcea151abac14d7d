#!/usr/bin/env bash
# The workload: a Block-mode claim and a writer pod that fills its first WRITE_MIB MiB with
# random bytes through the raw device (dd). The claim is marked once written, so running this
# again does not overwrite data a backup already holds.
# shellcheck source-path=SCRIPTDIR source=00-env.sh
source "$(dirname "$0")/00-env.sh"
WRITE_MIB="${WRITE_MIB:-16}"

say "claim $DEMO_NS/$PVC ($VOLUME_SIZE, Block)"
apply <<YAML
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: $PVC
  namespace: $DEMO_NS
  labels: {app.kubernetes.io/part-of: s3mover-demo, s3mover.io/backup: "true"}
spec:
  accessModes: [ReadWriteOnce]
  volumeMode: Block
  storageClassName: csi-hostpath-sc
  resources: {requests: {storage: $VOLUME_SIZE}}
YAML
k wait -n "$DEMO_NS" --for=jsonpath='{.status.phase}'=Bound "pvc/$PVC" --timeout=5m

say "block-writer: $WRITE_MIB MiB of random data"
written="$(k get pvc "$PVC" -n "$DEMO_NS" -o 'jsonpath={.metadata.annotations.s3mover-demo/initial-data}')"
if [[ "$written" == written ]]; then
    echo "already written (annotation s3mover-demo/initial-data)"
else
    run_pod block-writer "dd if=/dev/urandom of=/dev/xvda bs=1048576 count=$WRITE_MIB conv=fsync"
    k annotate pvc "$PVC" -n "$DEMO_NS" s3mover-demo/initial-data=written --overwrite
fi
