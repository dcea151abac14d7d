//! Shared helpers for the S3 integration tests: an environment map per test (so tests running
//! side by side never touch the process environment) and test data.

#![allow(dead_code)]

use std::collections::HashMap;

use s3mover_engine::storage::{open_store_with_env, Store, StoreError, StoreOptions};
use s3mover_testkit::Garage;

/// A private environment: the given variables, plus PATH, and HOME pointing at an empty
/// directory so the user's ~/.aws files never leak in.
pub struct TestEnv {
    vars: HashMap<String, String>,
    _home: tempfile::TempDir,
}

impl TestEnv {
    pub fn new(vars: Vec<(String, String)>) -> TestEnv {
        let home = tempfile::tempdir().expect("temp home");
        let mut map: HashMap<String, String> = vars.into_iter().collect();
        map.insert("HOME".into(), home.path().display().to_string());
        if let Ok(path) = std::env::var("PATH") {
            map.insert("PATH".into(), path);
        }
        TestEnv {
            vars: map,
            _home: home,
        }
    }

    /// The environment a client needs to reach `garage` at `endpoint` with its keys.
    pub fn for_garage(garage: &Garage, endpoint: &str) -> TestEnv {
        TestEnv::new(garage.env_for_endpoint(endpoint))
    }

    pub fn set(&mut self, key: &str, value: &str) -> &mut Self {
        self.vars.insert(key.into(), value.into());
        self
    }

    pub fn remove(&mut self, key: &str) -> &mut Self {
        self.vars.remove(key);
        self
    }

    pub fn get(&self, key: &str) -> Option<String> {
        self.vars.get(key).cloned()
    }

    pub fn open(&self, url: &str) -> Result<Store, StoreError> {
        self.open_with(url, &StoreOptions::default())
    }

    pub fn open_with(&self, url: &str, options: &StoreOptions) -> Result<Store, StoreError> {
        open_store_with_env(url, options, &|k| self.get(k))
    }
}

/// Deterministic, incompressible-looking test bytes.
pub fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// An error message is one line and never shows the secret.
pub fn assert_one_line_without(message: &str, secret: &str) {
    assert!(
        !message.contains('\n'),
        "error is not one line: {message:?}"
    );
    assert!(
        !message.contains(secret),
        "error shows the secret: {message:?}"
    );
}
