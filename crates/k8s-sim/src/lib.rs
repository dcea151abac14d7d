//! A simulated Kubernetes cluster for s3mover's tests.

pub mod controllers;

use std::path::PathBuf;

/// How the simulated cluster starts.
#[derive(Debug, Clone, Default)]
pub struct SimOptions {
    /// Where the cluster keeps its files.
    pub state_dir: PathBuf,
    /// The controllers' and nodes' settings.
    pub controllers: controllers::ControllerOptions,
}
