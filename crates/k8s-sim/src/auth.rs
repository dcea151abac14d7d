//! Authentication: the admin token, and service-account tokens as TokenRequest issues them.
//!
//! Service-account tokens are JWTs shaped like the real ones (`iss`, `sub`
//! `system:serviceaccount:NS:NAME`, `aud`, `exp`, `iat`, `nbf`, and the `kubernetes.io` claim
//! with the namespace, service account and bound pod). They are signed with HMAC-SHA256
//! under a key that lives only in this process, built by hand on `ring` (already a
//! workspace dependency) rather than a JWT crate: nobody but this server verifies them —
//! clients treat tokens as opaque and a service that must check one asks the TokenReview
//! endpoint, exactly as a real CSI sidecar does — so nine lines of HS256 are the whole need.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;
use serde_json::{json, Value};

/// The audience the API server itself accepts (its default `--api-audiences`).
pub const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

/// The name the admin token authenticates as.
pub const ADMIN_USER: &str = "kubernetes-admin";

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// User name (`system:serviceaccount:NS:NAME` for a service account).
    pub username: String,
    /// UID (the service account's).
    pub uid: String,
    /// Groups.
    pub groups: Vec<String>,
    /// `kubernetes.io` extras (the bound pod's name and uid).
    pub extra: Value,
}

impl UserInfo {
    /// The administrator (the admin token): member of `system:masters`, never checked by RBAC.
    pub fn admin() -> UserInfo {
        UserInfo {
            username: ADMIN_USER.into(),
            uid: String::new(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
            extra: json!({}),
        }
    }

    /// Whether RBAC is bypassed for this user.
    pub fn is_admin(&self) -> bool {
        self.groups.iter().any(|g| g == "system:masters")
    }

    /// The service account's `(namespace, name)` if this is one.
    pub fn service_account(&self) -> Option<(&str, &str)> {
        let rest = self.username.strip_prefix("system:serviceaccount:")?;
        rest.split_once(':')
    }

    /// The `user` of a TokenReview status.
    pub fn to_json(&self) -> Value {
        json!({"username": self.username, "uid": self.uid, "groups": self.groups, "extra": self.extra})
    }
}

/// What a verified token says.
#[derive(Debug, Clone)]
pub struct TokenClaims {
    /// Namespace of the service account.
    pub namespace: String,
    /// Name of the service account.
    pub name: String,
    /// UID of the service account when the token was issued.
    pub sa_uid: String,
    /// Audiences.
    pub audiences: Vec<String>,
    /// The pod the token is bound to: `(name, uid)`.
    pub pod: Option<(String, String)>,
}

impl TokenClaims {
    /// The user the token authenticates as.
    pub fn user(&self) -> UserInfo {
        let mut extra = json!({});
        if let Some((name, uid)) = &self.pod {
            extra = json!({
                "authentication.kubernetes.io/pod-name": [name],
                "authentication.kubernetes.io/pod-uid": [uid],
            });
        }
        UserInfo {
            username: format!("system:serviceaccount:{}:{}", self.namespace, self.name),
            uid: self.sa_uid.clone(),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{}", self.namespace),
                "system:authenticated".into(),
            ],
            extra,
        }
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a JWT of this server, or tampered with.
    #[error("invalid bearer token, token could not be validated")]
    Invalid,
    /// Past its expiry.
    #[error("invalid bearer token, service account token has expired")]
    Expired,
    /// Not meant for the audiences asked about.
    #[error("invalid bearer token, token audiences {token:?} is invalid for the target audiences {wanted:?}")]
    Audience {
        /// The token's audiences.
        token: Vec<String>,
        /// The audiences accepted.
        wanted: Vec<String>,
    },
}

/// Issues and verifies service-account tokens.
pub struct TokenIssuer {
    key: hmac::Key,
}

impl Default for TokenIssuer {
    fn default() -> Self {
        TokenIssuer::new()
    }
}

impl TokenIssuer {
    /// An issuer with a fresh random key.
    pub fn new() -> TokenIssuer {
        use rand::RngCore;
        let mut secret = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut secret);
        TokenIssuer {
            key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
        }
    }

    /// A signed token for `claims`, valid for `ttl_seconds` from `now` (Unix seconds).
    pub fn issue(&self, claims: &TokenClaims, now: i64, ttl_seconds: i64) -> String {
        let mut k8s = json!({
            "namespace": claims.namespace,
            "serviceaccount": {"name": claims.name, "uid": claims.sa_uid},
        });
        if let Some((name, uid)) = &claims.pod {
            k8s["pod"] = json!({"name": name, "uid": uid});
        }
        let payload = json!({
            "iss": API_AUDIENCE,
            "sub": format!("system:serviceaccount:{}:{}", claims.namespace, claims.name),
            "aud": claims.audiences,
            "iat": now,
            "nbf": now,
            "exp": now + ttl_seconds,
            "kubernetes.io": k8s,
        });
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let body = URL_SAFE_NO_PAD.encode(payload.to_string());
        let signing_input = format!("{header}.{body}");
        let sig = hmac::sign(&self.key, signing_input.as_bytes());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    /// Verifies a token's signature, expiry and (when `audiences` is not empty) that it is
    /// meant for one of them; the claims if good.
    pub fn verify(
        &self,
        token: &str,
        audiences: &[String],
        now: i64,
    ) -> Result<TokenClaims, TokenError> {
        let (signing_input, sig) = token.rsplit_once('.').ok_or(TokenError::Invalid)?;
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| TokenError::Invalid)?;
        hmac::verify(&self.key, signing_input.as_bytes(), &sig).map_err(|_| TokenError::Invalid)?;
        let body = signing_input
            .split_once('.')
            .map(|(_, b)| b)
            .ok_or(TokenError::Invalid)?;
        let payload: Value = URL_SAFE_NO_PAD
            .decode(body)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenError::Invalid)?;
        let exp = payload["exp"].as_i64().ok_or(TokenError::Invalid)?;
        if now >= exp {
            return Err(TokenError::Expired);
        }
        let token_aud: Vec<String> = payload["aud"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if !audiences.is_empty() && !token_aud.iter().any(|a| audiences.contains(a)) {
            return Err(TokenError::Audience {
                token: token_aud,
                wanted: audiences.to_vec(),
            });
        }
        let k8s = &payload["kubernetes.io"];
        let s = |v: &Value| v.as_str().unwrap_or("").to_string();
        let pod = k8s.get("pod").map(|p| (s(&p["name"]), s(&p["uid"])));
        Ok(TokenClaims {
            namespace: s(&k8s["namespace"]),
            name: s(&k8s["serviceaccount"]["name"]),
            sa_uid: s(&k8s["serviceaccount"]["uid"]),
            audiences: token_aud,
            pod,
        })
    }
}

/// Unix seconds now.
pub fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(aud: &str) -> TokenClaims {
        TokenClaims {
            namespace: "ns".into(),
            name: "sa".into(),
            sa_uid: "u".into(),
            audiences: vec![aud.into()],
            pod: None,
        }
    }

    #[test]
    fn tokens_verify_and_are_audience_checked() {
        let issuer = TokenIssuer::new();
        let t = issuer.issue(&claims("cbt"), 1000, 600);
        assert_eq!(t.split('.').count(), 3);
        let c = issuer.verify(&t, &["cbt".into()], 1001).unwrap();
        assert_eq!(c.user().username, "system:serviceaccount:ns:sa");
        assert!(matches!(
            issuer.verify(&t, &["other".into()], 1001),
            Err(TokenError::Audience { .. })
        ));
        assert_eq!(
            issuer.verify(&t, &[], 1600).unwrap_err(),
            TokenError::Expired
        );
        let mut forged = t.clone();
        forged.pop();
        forged.push(if t.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(
            issuer.verify(&forged, &[], 1001).unwrap_err(),
            TokenError::Invalid
        );
        let other = TokenIssuer::new();
        assert_eq!(
            other.verify(&t, &[], 1001).unwrap_err(),
            TokenError::Invalid
        );
    }
}
