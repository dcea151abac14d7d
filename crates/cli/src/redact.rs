//! Keeps credentials written into URLs out of everything s3mover prints.
//!
//! A repository URL may carry a user and password (`?endpoint=http://user:secret@host`, or
//! userinfo in the URL itself), and so may `AWS_ENDPOINT_URL`. Error lines, log lines and
//! summaries pass through [`redact`], which replaces the userinfo of every URL in the text —
//! plain or percent-encoded — with `***`, and every known secret (the passwords of the URLs
//! given, see [`remember_url`]) wherever it appears, e.g. in a client's debug output.

use std::borrow::Cow;
use std::sync::Mutex;

/// What replaces a credential.
const MASK: &str = "***";
/// Secrets shorter than this are only masked inside URLs: masking every occurrence of a
/// one- or two-character string would garble the text without hiding anything.
const MIN_SECRET_CHARS: usize = 3;

/// Secrets taken from the URLs the command was given.
static SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Remembers the credentials in `url` (and in URLs inside it, such as `?endpoint=`) so that
/// [`redact`] masks them wherever they appear.
pub fn remember_url(url: &str) {
    let mut found = Vec::new();
    collect_secrets(url, &mut found);
    if let Ok(parsed) = url::Url::parse(url) {
        for (_, value) in parsed.query_pairs() {
            collect_secrets(&value, &mut found);
        }
    }
    let mut secrets = SECRETS.lock().unwrap_or_else(|p| p.into_inner());
    for secret in found {
        if secret.chars().count() >= MIN_SECRET_CHARS && !secrets.contains(&secret) {
            secrets.push(secret);
        }
    }
}

/// Remembers the credentials of every environment variable that may hold an endpoint URL.
pub fn remember_environment() {
    for name in ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "S3MOVER_REPO"] {
        if let Ok(value) = std::env::var(name) {
            remember_url(&value);
        }
    }
}

/// The userinfo of `url` if it has one: the password, raw and percent-decoded, and the whole
/// `user:password` text.
fn collect_secrets(url: &str, out: &mut Vec<String>) {
    let Ok(parsed) = url::Url::parse(url) else {
        return;
    };
    if let Some(password) = parsed.password() {
        out.push(password.to_string());
        if let Ok(decoded) = percent_decode(password) {
            out.push(decoded);
        }
    }
}

fn percent_decode(text: &str) -> Result<String, ()> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(())?;
            let hex = std::str::from_utf8(hex).map_err(|_| ())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| ())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ())
}

/// `text` with the userinfo of every URL in it, and every remembered secret, masked.
pub fn redact(text: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(text);
    for (separator, ends) in [("://", PLAIN_ENDS), ("%3A%2F%2F", ENCODED_ENDS)] {
        if let Some(masked) = mask_userinfo(&out, separator, ends) {
            out = Cow::Owned(masked);
        }
    }
    let secrets = SECRETS.lock().unwrap_or_else(|p| p.into_inner());
    for secret in secrets.iter() {
        if out.contains(secret.as_str()) {
            out = Cow::Owned(out.replace(secret.as_str(), MASK));
        }
    }
    out
}

/// Where the authority of a plain URL ends.
const PLAIN_ENDS: &[&str] = &[
    "/", "?", "#", " ", "\t", "\n", "\"", "'", ")", ">", ",", "\\",
];
/// Where the authority of a percent-encoded URL (inside a query value) ends.
const ENCODED_ENDS: &[&str] = &[
    "%2F", "%2f", "%3F", "%3f", "&", "#", " ", "\t", "\n", "\"", "'",
];

/// Masks what comes before the last `@` (or `%40`) in the authority after each `separator`;
/// `None` when nothing was masked.
fn mask_userinfo(text: &str, separator: &str, ends: &[&str]) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    let separator_lower = separator.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut search = 0;
    let mut changed = false;
    while let Some(found) = lower[search..].find(&separator_lower) {
        let start = search + found + separator.len();
        let rest = &text[start..];
        let end = ends
            .iter()
            .filter_map(|e| rest.find(e))
            .min()
            .unwrap_or(rest.len());
        let authority = &rest[..end];
        let at = [
            authority.rfind('@'),
            authority.to_ascii_lowercase().rfind("%40"),
        ]
        .into_iter()
        .flatten()
        .max();
        if let Some(at) = at {
            out.push_str(&text[copied..start]);
            out.push_str(MASK);
            copied = start + at;
            changed = true;
        }
        search = start + end.max(1).min(rest.len());
        if search >= text.len() {
            break;
        }
    }
    if !changed {
        return None;
    }
    out.push_str(&text[copied..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_in_urls_is_masked() {
        assert_eq!(
            redact("cannot connect to http://user:hunter2@host:9000/b: refused"),
            "cannot connect to http://***@host:9000/b: refused"
        );
        assert_eq!(
            redact("s3://b/p?endpoint=http://u:pw@h:1 (endpoint http://u:pw@h:1)"),
            "s3://b/p?endpoint=http://***@h:1 (endpoint http://***@h:1)"
        );
        assert_eq!(
            redact("s3://b/p?endpoint=http%3A%2F%2Fu%3Apw%40h%3A1&region=x"),
            "s3://b/p?endpoint=http%3A%2F%2F***%40h%3A1&region=x"
        );
        assert_eq!(redact("no urls here"), "no urls here");
        assert_eq!(redact("http://host/a@b"), "http://host/a@b");
        assert_eq!(redact("://"), "://");
        assert_eq!(redact("x://@"), "x://***@");
    }

    #[test]
    fn remembered_secrets_are_masked_anywhere() {
        remember_url("s3://b/p?endpoint=http://user:s%40cret-pw@host:9000");
        let text = redact("Url { password: Some(\"s@cret-pw\") }");
        assert!(!text.contains("s@cret-pw"), "{text}");
    }
}
