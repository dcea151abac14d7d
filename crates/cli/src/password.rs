//! Where the repository password comes from: `S3MOVER_PASSWORD`, a password file
//! (`--password-file` / `S3MOVER_PASSWORD_FILE`), or the output of `S3MOVER_PASSWORD_COMMAND`
//! (given `S3MOVER_PASSWORD_COMMAND_TIMEOUT` to finish, 60 s unless set).

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

/// How long `S3MOVER_PASSWORD_COMMAND` may run unless `S3MOVER_PASSWORD_COMMAND_TIMEOUT` says.
const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes of the command's standard error an error message quotes (its end).
const STDERR_SHOWN_BYTES: usize = 400;

/// A password source failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PasswordError(pub String);

/// A password and where it came from, for messages about it.
pub struct Password {
    pub secret: Zeroizing<String>,
    /// `S3MOVER_PASSWORD`, `password file PATH` or `S3MOVER_PASSWORD_COMMAND`.
    pub source: String,
}

/// Finds the password, in order: password file, `S3MOVER_PASSWORD`, `S3MOVER_PASSWORD_COMMAND`.
/// `None` when no source is set. A trailing line break is not part of the password, whichever
/// the source.
pub fn resolve(password_file: Option<&Path>) -> Result<Option<Password>, PasswordError> {
    if let Some(path) = password_file {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            PasswordError(format!("cannot read password file {}: {e}", path.display()))
        })?);
        let first = text.lines().next().unwrap_or_default().to_string();
        if first.is_empty() {
            return Err(PasswordError(format!(
                "password file {} is empty",
                path.display()
            )));
        }
        return Ok(Some(Password {
            secret: Zeroizing::new(first),
            source: format!("password file {}", path.display()),
        }));
    }
    if let Ok(password) = std::env::var("S3MOVER_PASSWORD").map(Zeroizing::new) {
        let password = without_line_break(&password);
        if !password.is_empty() {
            return Ok(Some(Password {
                secret: Zeroizing::new(password.to_string()),
                source: "S3MOVER_PASSWORD".into(),
            }));
        }
    }
    if let Ok(command) = std::env::var("S3MOVER_PASSWORD_COMMAND") {
        if !command.trim().is_empty() {
            let timeout = command_timeout()?;
            return Ok(Some(Password {
                secret: run_command(&command, timeout)?,
                source: "S3MOVER_PASSWORD_COMMAND".into(),
            }));
        }
    }
    Ok(None)
}

/// The text without one trailing `\n` or `\r\n` (as `echo` and most editors leave).
fn without_line_break(text: &str) -> &str {
    let text = text.strip_suffix('\n').unwrap_or(text);
    text.strip_suffix('\r').unwrap_or(text)
}

/// `S3MOVER_PASSWORD_COMMAND_TIMEOUT` (e.g. `30s`, `2m`), or the default.
fn command_timeout() -> Result<Duration, PasswordError> {
    let Ok(text) = std::env::var("S3MOVER_PASSWORD_COMMAND_TIMEOUT") else {
        return Ok(DEFAULT_COMMAND_TIMEOUT);
    };
    let parsed = s3mover_engine::retention::parse_duration(&text)
        .map_err(|e| PasswordError(format!("S3MOVER_PASSWORD_COMMAND_TIMEOUT: {e}")))?;
    match u64::try_from(parsed.whole_milliseconds()) {
        Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
        _ => Err(PasswordError(format!(
            "S3MOVER_PASSWORD_COMMAND_TIMEOUT {text:?} must be longer than zero"
        ))),
    }
}

/// Runs the command in its own process group and takes its output without trailing line
/// breaks. When it
/// fails its standard error is quoted; when it outlives `timeout` the whole group is killed.
fn run_command(command: &str, timeout: Duration) -> Result<Zeroizing<String>, PasswordError> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| PasswordError(format!("cannot run S3MOVER_PASSWORD_COMMAND: {e}")))?;
    let stdout = read_in_background(child.stdout.take());
    let stderr = read_in_background(child.stderr.take());
    let status = match wait_until(&mut child, Instant::now() + timeout) {
        Ok(Some(status)) => status,
        Ok(None) => {
            kill_group(&mut child);
            return Err(PasswordError(format!(
                "S3MOVER_PASSWORD_COMMAND did not finish within {:?} and was stopped; \
                 check the command, or raise S3MOVER_PASSWORD_COMMAND_TIMEOUT",
                timeout
            )));
        }
        Err(e) => {
            kill_group(&mut child);
            return Err(PasswordError(format!(
                "cannot wait for S3MOVER_PASSWORD_COMMAND: {e}"
            )));
        }
    };
    let output = Zeroizing::new(stdout.join().unwrap_or_default());
    let errors = stderr.join().unwrap_or_default();
    if !status.success() {
        return Err(PasswordError(format!(
            "S3MOVER_PASSWORD_COMMAND exited with {status}{}; check the command",
            quoted_stderr(&errors)
        )));
    }
    let text = Zeroizing::new(String::from_utf8_lossy(&output).into_owned());
    let password = text.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        return Err(PasswordError(format!(
            "S3MOVER_PASSWORD_COMMAND printed nothing{}",
            quoted_stderr(&errors)
        )));
    }
    Ok(Zeroizing::new(password.to_string()))
}

/// Reads a pipe to its end on a thread of its own (the two pipes are read at once, so a
/// command that fills one while s3mover waits on the other cannot stall).
fn read_in_background<R: Read + Send + 'static>(
    pipe: Option<R>,
) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

/// Waits for the child until `deadline`; `None` when it is still running then.
fn wait_until(
    child: &mut Child,
    deadline: Instant,
) -> std::io::Result<Option<std::process::ExitStatus>> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(20)));
    }
}

/// Kills the command and everything it started in its process group, and reaps it.
fn kill_group(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill has no memory-safety preconditions; the group is the child's own.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `: <the end of stderr>` when the command wrote to standard error, else nothing.
fn quoted_stderr(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim();
    if text.is_empty() {
        return String::new();
    }
    let mut start = text.len().saturating_sub(STDERR_SHOWN_BYTES);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let shown: String = text[start..]
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!(
        "; it said: {}{}",
        if start > 0 { "…" } else { "" },
        shown.trim()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_trailing_line_break_is_dropped() {
        assert_eq!(without_line_break("secret\n"), "secret");
        assert_eq!(without_line_break("secret\r\n"), "secret");
        assert_eq!(without_line_break("secret"), "secret");
        assert_eq!(without_line_break("secret \n\n"), "secret \n");
    }
}
