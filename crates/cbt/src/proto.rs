//! Generated gRPC code for the two SnapshotMetadata flavours (built by `build.rs`).

/// Kubernetes-facing API served by the external-snapshot-metadata sidecar (package `snapshotmetadata`).
#[allow(clippy::all, missing_docs)]
pub mod k8s {
    tonic::include_proto!("snapshotmetadata");
}

/// CSI SnapshotMetadata service served by drivers on their unix socket (package `csi.v1`).
#[allow(clippy::all, missing_docs)]
pub mod csi {
    tonic::include_proto!("csi.v1");
}
