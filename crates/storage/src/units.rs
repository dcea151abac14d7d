//! The one grammar for sizes and durations, shared by command-line flags and environment
//! variables, so that a value accepted in one place is accepted in every other.
//!
//! - A **size** is a whole number of bytes with an optional binary unit: `65536`, `64K`,
//!   `64KiB`, `5 M`, `2g`, `1T` (`B`; `K`/`KB`/`KiB`; `M`/…; `G`/…; `T`/…, any case; the
//!   decimal-looking `KB`, `MB`, … are binary too).
//! - A **duration** is whole seconds (`30`), or one or more number-and-unit groups: `500ms`,
//!   `45s`, `10m` (or `10min`), `2h`, `7d`, `2w`, `1y` (365 days), `1h30m`, `1d12h`.
//!
//! Both reject fractions, signs and overflow with a one-line reason that callers put after the
//! flag or variable name. Whether zero is allowed is the caller's rule.

use std::time::Duration;

/// Parses a size (see the module documentation) into bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    if number.is_empty() {
        return Err(format!(
            "{text:?} is not a size; use a number with an optional K, M, G or T suffix"
        ));
    }
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {text:?}; use K, M, G or T"
            ))
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .ok_or_else(|| format!("size {text:?} is too large"))
}

/// Parses a duration (see the module documentation).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let bad = || format!("{text:?} is not a duration; use e.g. 30s, 500ms, 10m, 2h, 1h30m, 7d");
    let too_large = || format!("duration {text:?} is too large");
    if t.is_empty() {
        return Err(bad());
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().map(Duration::from_secs).map_err(|_| too_large());
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| too_large())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = if unit == "ms" {
            Duration::from_millis(number)
        } else {
            let seconds: u64 = match unit {
                "s" => 1,
                "m" | "min" => 60,
                "h" => 3600,
                "d" => 86_400,
                "w" => 7 * 86_400,
                "y" => 365 * 86_400,
                _ => {
                    return Err(format!(
                    "{text:?} is not a duration: unknown unit {unit:?}; use ms, s, m, h, d, w or y"
                ))
                }
            };
            Duration::from_secs(number.checked_mul(seconds).ok_or_else(too_large)?)
        };
        total = total.checked_add(part).ok_or_else(too_large)?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("123"), Ok(123));
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("5 M"), Ok(5 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert_eq!(parse_size("16KB"), Ok(16 << 10));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert_eq!(parse_size(" 7b "), Ok(7));
        for bad in ["1.5G", "MiB", "K", "-1", "", "12Q", "1KK"] {
            assert!(parse_size(bad).is_err(), "{bad:?} parsed");
        }
        assert!(parse_size("99999999999999999999G")
            .unwrap_err()
            .contains("too large"));
        assert!(parse_size("99999999999999999999")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn durations() {
        let s = Duration::from_secs;
        assert_eq!(parse_duration("30"), Ok(s(30)));
        assert_eq!(parse_duration("0"), Ok(s(0)));
        assert_eq!(parse_duration("0s"), Ok(s(0)));
        assert_eq!(parse_duration("45s"), Ok(s(45)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(s(120)));
        assert_eq!(parse_duration("10min"), Ok(s(600)));
        assert_eq!(parse_duration("1h"), Ok(s(3600)));
        assert_eq!(parse_duration("1h30m"), Ok(s(5400)));
        assert_eq!(parse_duration("1d12h"), Ok(s(36 * 3600)));
        assert_eq!(parse_duration("2w"), Ok(s(14 * 86_400)));
        assert_eq!(parse_duration("1y"), Ok(s(365 * 86_400)));
        assert_eq!(parse_duration("1s500ms"), Ok(Duration::from_millis(1500)));
        for bad in [
            "", " ", "h", "5q", "fast", "soon", "5x", "1.5h", "-1s", "1h-",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} parsed");
        }
        assert!(parse_duration("fast")
            .unwrap_err()
            .contains("is not a duration"));
        assert!(parse_duration("99999999999999999999d")
            .unwrap_err()
            .contains("too large"));
        assert!(parse_duration("99999999999999999999")
            .unwrap_err()
            .contains("too large"));
        assert!(parse_duration("18446744073709551615s1s")
            .unwrap_err()
            .contains("too large"));
    }
}
