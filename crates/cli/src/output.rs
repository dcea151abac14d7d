//! Presentation: logging setup, progress bars (stderr, TTY only), sizes and tables.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};

use indicatif::{ProgressBar, ProgressStyle};
use s3mover_engine::progress::Progress;

/// Logs go to stderr; `-v` raises the level, `-q` lowers it, `RUST_LOG` overrides both.
pub fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LogWriter)
        // Colour codes only on a terminal: a log file or a script gets plain lines.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// The progress bar on screen, if any. Log lines are written around it: drawn on the same
/// terminal without it knowing, a line would land after the bar's text and be partly erased
/// at the next redraw.
static BAR_ON_SCREEN: Mutex<Option<ProgressBar>> = Mutex::new(None);

fn bar_on_screen() -> Option<ProgressBar> {
    BAR_ON_SCREEN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
}

fn set_bar_on_screen(bar: Option<ProgressBar>) {
    *BAR_ON_SCREEN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = bar;
}

/// Standard error for log lines, with credentials in URLs masked: with a bar on screen, the bar is cleared, the line written
/// and the bar drawn again below it. The log formatter hands over each line whole.
struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let line = crate::redact::redact(&text);
        match bar_on_screen() {
            Some(bar) => bar.suspend(|| std::io::stderr().write_all(line.as_bytes()))?,
            None => std::io::stderr().write_all(line.as_bytes())?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// `S3MOVER_PROGRESS=lines`: progress as plain `progress: DONE/TOTAL bytes` lines on stderr
/// (at the start, at most once a second, and at the end) instead of a bar — what a mover pod's
/// log carries for the orchestrator to show.
pub const PROGRESS_ENV: &str = "S3MOVER_PROGRESS";

/// A progress bar on stderr, or nothing when stderr is not a terminal, output is quiet or
/// the result goes out as JSON; progress lines instead when [`PROGRESS_ENV`] asks for them
/// (and output is not quiet), JSON or not.
pub fn progress_bar(label: &str, quiet: bool, json: bool) -> Option<Arc<dyn Progress>> {
    if quiet {
        return None;
    }
    if std::env::var(PROGRESS_ENV).is_ok_and(|v| v == "lines") {
        return Some(Arc::new(ProgressLines::default()));
    }
    if json || !std::io::stderr().is_terminal() {
        return None;
    }
    Some(Arc::new(Bar {
        bar: ProgressBar::hidden(),
        label: label.to_string(),
    }))
}

struct Bar {
    bar: ProgressBar,
    label: String,
}

impl Progress for Bar {
    fn start(&self, total: u64) {
        self.bar.set_length(total);
        self.bar
            .set_draw_target(indicatif::ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(
            "{msg:>8} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ) {
            self.bar.set_style(style.progress_chars("=> "));
        }
        self.bar.set_message(self.label.clone());
        set_bar_on_screen(Some(self.bar.clone()));
    }
    fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
    }
    fn finish(&self) {
        set_bar_on_screen(None);
        self.bar.finish_and_clear();
    }
}

/// Progress as lines on stderr, for logs ([`PROGRESS_ENV`]).
#[derive(Default)]
struct ProgressLines {
    state: Mutex<LinesState>,
}

#[derive(Default)]
struct LinesState {
    total: u64,
    done: u64,
    last_line: Option<std::time::Instant>,
}

impl ProgressLines {
    fn line(state: &mut LinesState) {
        eprintln!("progress: {}/{} bytes", state.done, state.total);
        state.last_line = Some(std::time::Instant::now());
    }
}

impl Progress for ProgressLines {
    fn start(&self, total: u64) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        *state = LinesState {
            total,
            ..LinesState::default()
        };
        Self::line(&mut state);
    }
    fn advance(&self, bytes: u64) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.done = state.done.saturating_add(bytes);
        if state
            .last_line
            .is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(1))
        {
            Self::line(&mut state);
        }
    }
    fn finish(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        Self::line(&mut state);
    }
}

/// Says on standard error how many S3 request attempts failed and were retried during a
/// command that completed (`failed`), if any did: the warnings while it ran are spaced out and
/// do not name them all.
pub fn note_failed_attempts(failed: u64) {
    match failed {
        0 => {}
        1 => eprintln!("note: 1 S3 request attempt failed and was retried"),
        n => eprintln!("note: {n} S3 request attempts failed and were retried"),
    }
}

/// Bytes as a short human size (binary units).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Prints a value as pretty JSON on stdout, and writes it to the result file if one is set.
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    write_result(&serde_json::to_value(value)?);
    Ok(())
}

/// `S3MOVER_RESULT_FILE`: where a mover pod's `s3mover` writes its final JSON result (or
/// `{"error": …}`), normally `/dev/termination-log`, for the orchestrator to read back.
pub const RESULT_FILE_ENV: &str = "S3MOVER_RESULT_FILE";

/// Kubernetes keeps at most 4096 bytes of a termination message.
const RESULT_LIMIT: usize = 4096;

/// Writes `value` compactly to the result file, if one is set. A result too long for a
/// termination message loses its nested objects (request counts and the like) first.
pub fn write_result(value: &serde_json::Value) {
    let Some(path) = std::env::var_os(RESULT_FILE_ENV).filter(|p| !p.is_empty()) else {
        return;
    };
    let text = compact_result(value);
    if let Err(e) = std::fs::write(&path, text) {
        eprintln!(
            "s3mover: cannot write the result to {}: {e}",
            std::path::Path::new(&path).display()
        );
    }
}

fn compact_result(value: &serde_json::Value) -> String {
    let text = value.to_string();
    if text.len() <= RESULT_LIMIT {
        return text;
    }
    let mut slim = value.clone();
    if let Some(object) = slim.as_object_mut() {
        object.retain(|_, v| !v.is_object() && !v.is_array());
    }
    let text = slim.to_string();
    if text.len() <= RESULT_LIMIT {
        return text;
    }
    serde_json::json!({"error": "the result is too long for a termination message"}).to_string()
}

/// A name read from the repository (a volume, a tag) as text output shows it: as it is when it
/// is plain, quoted with escapes when it is empty, blank, has surrounding spaces or holds a
/// control character, so that no name can forge a line or send the terminal an escape
/// sequence.
pub fn shown(name: &str) -> std::borrow::Cow<'_, str> {
    let plain = !name.is_empty()
        && name.trim() == name
        && !name.chars().any(|c| c.is_control() || c == '"');
    if plain {
        name.into()
    } else {
        format!("{name:?}").into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_results_lose_nested_objects_first() {
        let small = serde_json::json!({"id": "ab", "requests": {"puts": 3}});
        assert_eq!(compact_result(&small), small.to_string());
        let big = serde_json::json!({"id": "ab", "requests": {"x": "y".repeat(5000)}});
        assert_eq!(compact_result(&big), r#"{"id":"ab"}"#);
    }

    #[test]
    fn names_with_control_characters_are_shown_escaped() {
        assert_eq!(shown("db"), "db");
        assert_eq!(shown("my volume"), "my volume");
        assert_eq!(shown(""), "\"\"");
        assert_eq!(shown(" "), "\" \"");
        assert_eq!(shown("a\nb"), "\"a\\nb\"");
        assert_eq!(shown("\u{1b}[2J"), "\"\\u{1b}[2J\"");
    }

    /// A bar is known to the log writer from its start to its finish, and log lines written
    /// meanwhile go through it whole.
    #[test]
    fn log_lines_go_around_the_bar_while_it_is_on_screen() {
        let bar = Bar {
            bar: ProgressBar::hidden(),
            label: "backup".into(),
        };
        assert!(bar_on_screen().is_none());
        bar.start(100);
        assert!(bar_on_screen().is_some());
        let line = b"a log line\n";
        assert_eq!(LogWriter.write(line).expect("write"), line.len());
        bar.finish();
        assert!(bar_on_screen().is_none());
    }
}
