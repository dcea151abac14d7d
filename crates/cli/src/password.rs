//! Where the repository password comes from: `S3MOVER_PASSWORD`, a password file
//! (`--password-file` / `S3MOVER_PASSWORD_FILE`), or the output of `S3MOVER_PASSWORD_COMMAND`.

use std::path::Path;
use std::process::Command;

use zeroize::Zeroizing;

/// A password source failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PasswordError(pub String);

/// Finds the password, in order: password file, `S3MOVER_PASSWORD`, `S3MOVER_PASSWORD_COMMAND`.
/// `None` when no source is set.
pub fn resolve(password_file: Option<&Path>) -> Result<Option<Zeroizing<String>>, PasswordError> {
    if let Some(path) = password_file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            PasswordError(format!("cannot read password file {}: {e}", path.display()))
        })?;
        let first = text.lines().next().unwrap_or_default().to_string();
        if first.is_empty() {
            return Err(PasswordError(format!(
                "password file {} is empty",
                path.display()
            )));
        }
        return Ok(Some(Zeroizing::new(first)));
    }
    if let Ok(password) = std::env::var("S3MOVER_PASSWORD") {
        if !password.is_empty() {
            return Ok(Some(Zeroizing::new(password)));
        }
    }
    if let Ok(command) = std::env::var("S3MOVER_PASSWORD_COMMAND") {
        if !command.trim().is_empty() {
            return run_command(&command).map(Some);
        }
    }
    Ok(None)
}

fn run_command(command: &str) -> Result<Zeroizing<String>, PasswordError> {
    let output = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| PasswordError(format!("cannot run S3MOVER_PASSWORD_COMMAND: {e}")))?;
    if !output.status.success() {
        return Err(PasswordError(format!(
            "S3MOVER_PASSWORD_COMMAND exited with {}; check the command",
            output.status
        )));
    }
    let text = Zeroizing::new(String::from_utf8_lossy(&output.stdout).into_owned());
    let password = text.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        return Err(PasswordError(
            "S3MOVER_PASSWORD_COMMAND printed nothing".into(),
        ));
    }
    Ok(Zeroizing::new(password))
}
