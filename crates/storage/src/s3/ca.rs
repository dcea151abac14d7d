//! The CA bundle a user names with `--ca-cert`: read, parsed as PEM, refused when empty.

use super::*;

pub(super) fn read_ca_certificates(file: &Path) -> Result<Vec<reqwest::Certificate>, StoreError> {
    let pem = std::fs::read(file).map_err(|e| {
        StoreError::Location(format!("cannot read --ca-cert {}: {e}", file.display()))
    })?;
    let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
        StoreError::Location(format!(
            "--ca-cert {} is not a PEM certificate bundle: {}",
            file.display(),
            crate::one_line(&e.to_string())
        ))
    })?;
    if certificates.is_empty() {
        return Err(StoreError::Location(format!(
            "--ca-cert {} holds no PEM certificate",
            file.display()
        )));
    }
    Ok(certificates)
}
