//! Timestamps as the repository stores them: RFC 3339 in UTC.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Now, as RFC 3339 UTC with microseconds: fixed width, so these strings sort by time even
/// for backups taken within the same second.
pub(crate) fn now_rfc3339() -> String {
    let now = OffsetDateTime::now_utc();
    let micros = now.microsecond();
    let seconds = format_rfc3339(now);
    match seconds.strip_suffix('Z') {
        Some(base) => format!("{base}.{micros:06}Z"),
        None => seconds,
    }
}

/// Formats a time as RFC 3339 UTC with seconds precision.
pub fn format_rfc3339(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .unwrap_or(t)
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// Parses an RFC 3339 time.
pub fn parse_rfc3339(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).ok()
}
