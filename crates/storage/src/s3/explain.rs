//! One line that says what a failed S3 request means and what to check.

use super::*;

/// The innermost error of `error`'s chain, the one that says what happened on the wire
/// ("Connection reset by peer (os error 104)"), for a warning that fits on a line.
pub(super) fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    crate::one_line(&cause.to_string())
}

pub(super) fn is_certificate_error(error: &HttpError) -> bool {
    let text = error_chain_text(error).to_ascii_lowercase();
    text.contains("invalid peer certificate") || text.contains("unknownissuer")
}

/// One line saying what to check, for the S3 failures a user can fix: wrong credentials,
/// missing bucket, wrong region, unreachable endpoint, untrusted certificate. `None` for
/// anything else (the caller reports the error itself).
pub fn explain(error: &object_store::Error) -> Option<String> {
    let text = error_chain_text(error);
    let endpoint = endpoint_in(&text);
    let at = endpoint
        .as_deref()
        .map(|e| format!(" at {e}"))
        .unwrap_or_default();
    if let Some(start) = text.find("the S3 credentials command") {
        return Some(crate::one_line(&text[start..]));
    }
    if text.contains("InvalidAccessKeyId")
        || text.contains("SignatureDoesNotMatch")
        || text.contains("InvalidToken")
        || text.contains("ExpiredToken")
        || text.contains("No such key")
        || text.contains("Forbidden: Invalid signature")
        || text.contains("InvalidSignature")
    {
        return Some(format!(
            "the S3 server{at} rejected the credentials: check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), the AWS_PROFILE, or S3MOVER_S3_CREDENTIALS_COMMAND"
        ));
    }
    if text.contains("NoSuchBucket") || text.contains("Bucket not found") {
        return Some(format!(
            "the bucket does not exist on the S3 server{at}: check the bucket name in s3://BUCKET/PREFIX and the endpoint"
        ));
    }
    if text.contains("AuthorizationHeaderMalformed")
        || text.contains("PermanentRedirect")
        || text.contains("IllegalLocationConstraint")
        || text.contains("incorrectly configured region")
        || (text.contains("region") && text.contains("400 Bad Request"))
        || text.contains("unexpected region")
    {
        return Some(format!(
            "the S3 server{at} expects another region: set AWS_REGION or ?region= to the bucket's region"
        ));
    }
    if text.contains("AccessDenied") || text.contains("403 Forbidden") {
        return Some(format!(
            "the S3 server{at} denied access: check that the credentials (AWS_ACCESS_KEY_ID, AWS_PROFILE or S3MOVER_S3_CREDENTIALS_COMMAND) are allowed to read and write this bucket"
        ));
    }
    let lower = text.to_ascii_lowercase();
    if lower.contains("connection refused") {
        return Some(format!(
            "cannot connect to the S3 endpoint{at}: connection refused; check AWS_ENDPOINT_URL or ?endpoint= and that the server is running"
        ));
    }
    if lower.contains("tcp connect error")
        && (lower.contains("deadline has elapsed") || lower.contains("timed out"))
    {
        return Some(format!(
            "cannot connect to the S3 endpoint{at}: no answer to the connection within {}s; check AWS_ENDPOINT_URL or ?endpoint=, and that no firewall drops the connection",
            CONNECT_TIMEOUT.as_secs()
        ));
    }
    if lower.contains("dns error") || lower.contains("failed to lookup address") {
        return Some(format!(
            "cannot resolve the S3 endpoint's host{at}: check AWS_ENDPOINT_URL or ?endpoint="
        ));
    }
    if lower.contains("certificate") || lower.contains("unknownissuer") {
        return Some(format!(
            "the S3 endpoint{at} presented a TLS certificate that is not trusted: pass --ca-cert FILE with your CA (or, for a test server only, --insecure-skip-tls-verify)"
        ));
    }
    if lower.contains("invalid http version parsed") || lower.contains("invalid http") {
        return Some(format!(
            "the S3 endpoint{at} does not speak the expected protocol: check http:// versus https:// in AWS_ENDPOINT_URL or ?endpoint="
        ));
    }
    None
}

/// The display text of an error and all its sources, on one line.
pub(super) fn error_chain_text(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    crate::one_line(&parts.join(": "))
}

/// `scheme://host[:port]` of the first URL in `text`.
pub(super) fn endpoint_in(text: &str) -> Option<String> {
    let start = text.find("https://").or_else(|| text.find("http://"))?;
    let rest = &text[start..];
    let after_scheme = rest.find("://")? + 3;
    let end = rest[after_scheme..]
        .find(|c: char| c == '/' || c == '?' || c.is_whitespace())
        .map(|i| i + after_scheme)
        .unwrap_or(rest.len());
    Some(rest[..end].to_string())
}
