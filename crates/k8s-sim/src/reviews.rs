//! TokenRequest (`serviceaccounts/token`) and the create-only review kinds:
//! SelfSubjectAccessReview, SubjectAccessReview, LocalSubjectAccessReview,
//! SelfSubjectRulesReview, TokenReview (audience-checked, so a CBT service can validate the
//! tokens its clients present) and SelfSubjectReview (`kubectl auth whoami`).

use serde_json::{json, Value};

use crate::api::{parse_body, ApiState, Request, Target};
use crate::auth::{unix_now, TokenClaims, UserInfo, API_AUDIENCE};
use crate::meta;
use crate::rbac::{self, Attributes};
use crate::resources::{find, RESOURCES};
use crate::status::ApiError;
use crate::store::Key;

/// Whether the service account a token names still exists with the uid it had when the
/// token was issued (and the bound pod, if any, still exists): the real authenticator's
/// check that deleting a service account or pod revokes its tokens.
pub fn service_account_current(state: &ApiState, claims: &TokenClaims) -> bool {
    let (Some(sa), Some(pods)) = (find("", "v1", "serviceaccounts"), find("", "v1", "pods")) else {
        return false;
    };
    state.store.read(|view| {
        let sa_ok = view
            .get(&Key::new(sa, &claims.namespace, &claims.name))
            .is_some_and(|o| meta::uid(o) == claims.sa_uid);
        let pod_ok = claims.pod.as_ref().is_none_or(|(name, uid)| {
            view.get(&Key::new(pods, &claims.namespace, name))
                .is_some_and(|o| meta::uid(o) == uid)
        });
        sa_ok && pod_ok
    })
}

/// Issues a token for service account `ns/name` with `audiences` (the API server's own
/// when empty), valid `ttl_seconds`, optionally bound to a pod `(name, uid)`.
pub fn issue_token(
    state: &ApiState,
    ns: &str,
    name: &str,
    audiences: Vec<String>,
    ttl_seconds: i64,
    pod: Option<(String, String)>,
) -> Result<(String, i64), ApiError> {
    let sa_res = find("", "v1", "serviceaccounts").expect("serviceaccounts are served");
    let sa = state
        .store
        .read(|v| v.get(&Key::new(sa_res, ns, name)).cloned())
        .ok_or_else(|| ApiError::not_found(&RESOURCES[sa_res], name))?;
    let audiences = if audiences.is_empty() {
        vec![API_AUDIENCE.to_string()]
    } else {
        audiences
    };
    let claims = TokenClaims {
        namespace: ns.into(),
        name: name.into(),
        sa_uid: meta::uid(&sa).into(),
        audiences,
        pod,
    };
    let now = unix_now();
    Ok((
        state.issuer.issue(&claims, now, ttl_seconds),
        now + ttl_seconds,
    ))
}

/// `POST /api/v1/namespaces/NS/serviceaccounts/NAME/token`.
pub fn token_request(state: &ApiState, req: &Request, t: &Target) -> Result<Value, ApiError> {
    let body = parse_body(req)?;
    let spec = &body["spec"];
    let ttl = spec["expirationSeconds"].as_i64().unwrap_or(3600);
    if ttl < 600 {
        return Err(ApiError::new(
            422,
            "Invalid",
            "TokenRequest.authentication.k8s.io \"\" is invalid: spec.expirationSeconds: Invalid value: may not specify a duration less than 10 minutes",
        ));
    }
    let bound = &spec["boundObjectRef"];
    let pod = match bound["kind"].as_str() {
        Some("Pod") => {
            let pods = find("", "v1", "pods").expect("pods are served");
            let name = bound["name"].as_str().unwrap_or("");
            let obj = state
                .store
                .read(|v| v.get(&Key::new(pods, &t.ns, name)).cloned())
                .ok_or_else(|| ApiError::not_found(&RESOURCES[pods], name))?;
            if bound["uid"]
                .as_str()
                .is_some_and(|u| !u.is_empty() && u != meta::uid(&obj))
            {
                return Err(ApiError::new(409, "Conflict", format!("the UID in the bound object reference ({}) does not match the UID in record", bound["uid"].as_str().unwrap_or(""))));
            }
            Some((name.to_string(), meta::uid(&obj).to_string()))
        }
        _ => None,
    };
    let audiences = meta::string_list(&spec["audiences"]);
    let (token, exp) = issue_token(state, &t.ns, &t.name, audiences.clone(), ttl, pod)?;
    let audiences = if audiences.is_empty() {
        vec![API_AUDIENCE.to_string()]
    } else {
        audiences
    };
    let exp_time = time::OffsetDateTime::from_unix_timestamp(exp)
        .map(meta::format_time)
        .unwrap_or_default();
    Ok(json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": t.name, "namespace": t.ns, "creationTimestamp": null},
        "spec": {"audiences": audiences, "expirationSeconds": ttl, "boundObjectRef": spec.get("boundObjectRef").cloned().unwrap_or(Value::Null)},
        "status": {"token": token, "expirationTimestamp": exp_time},
    }))
}

/// A TokenReview's answer for `token` checked against `audiences` (the API server's own
/// when empty).
pub fn token_review_status(state: &ApiState, token: &str, audiences: &[String]) -> Value {
    let wanted = if audiences.is_empty() {
        vec![API_AUDIENCE.to_string()]
    } else {
        audiences.to_vec()
    };
    if token == state.admin_token {
        return json!({"authenticated": true, "user": UserInfo::admin().to_json(), "audiences": wanted});
    }
    match state.issuer.verify(token, &wanted, unix_now()) {
        Ok(claims) if service_account_current(state, &claims) => {
            let aud: Vec<&String> = claims
                .audiences
                .iter()
                .filter(|a| wanted.contains(a))
                .collect();
            json!({"authenticated": true, "user": claims.user().to_json(), "audiences": aud})
        }
        Ok(_) => {
            json!({"authenticated": false, "error": "service account or pod the token was issued for no longer exists", "user": {}})
        }
        Err(e) => json!({"authenticated": false, "error": e.to_string(), "user": {}}),
    }
}

fn user_from_spec(spec: &Value) -> UserInfo {
    UserInfo {
        username: spec["user"].as_str().unwrap_or("").to_string(),
        uid: spec["uid"].as_str().unwrap_or("").to_string(),
        groups: meta::string_list(&spec["groups"]),
        extra: spec.get("extra").cloned().unwrap_or(json!({})),
    }
}

fn access_status(state: &ApiState, user: &UserInfo, attrs: &Attributes) -> Value {
    let allowed = state.store.read(|v| rbac::authorize(v, user, attrs));
    if allowed {
        json!({"allowed": true, "reason": "allowed by RBAC"})
    } else {
        json!({"allowed": false})
    }
}

/// Answers a create of a review kind.
pub fn review(state: &ApiState, req: &Request, t: &Target) -> Result<Value, ApiError> {
    let def = &RESOURCES[t.res];
    let mut body = parse_body(req)?;
    if !body.is_object() {
        return Err(ApiError::bad_request(format!(
            "invalid {}: not an object",
            def.kind
        )));
    }
    let spec = body.get("spec").cloned().unwrap_or(json!({}));
    let status = match def.plural {
        "selfsubjectaccessreviews" => {
            access_status(state, &req.user, &Attributes::from_review_spec(&spec))
        }
        "subjectaccessreviews" => access_status(
            state,
            &user_from_spec(&spec),
            &Attributes::from_review_spec(&spec),
        ),
        "localsubjectaccessreviews" => {
            let mut attrs = Attributes::from_review_spec(&spec);
            attrs.namespace = t.ns.clone();
            access_status(state, &user_from_spec(&spec), &attrs)
        }
        "selfsubjectrulesreviews" => {
            let ns = spec["namespace"].as_str().unwrap_or("");
            let rules = state.store.read(|v| rbac::rules_for(v, &req.user, ns));
            let (resource, non_resource): (Vec<Value>, Vec<Value>) = rules
                .into_iter()
                .partition(|r| r.get("nonResourceURLs").is_none());
            json!({"resourceRules": resource, "nonResourceRules": non_resource, "incomplete": false})
        }
        "tokenreviews" => token_review_status(
            state,
            spec["token"].as_str().unwrap_or(""),
            &meta::string_list(&spec["audiences"]),
        ),
        "selfsubjectreviews" => json!({"userInfo": req.user.to_json()}),
        _ => return Err(ApiError::method_not_allowed()),
    };
    body["apiVersion"] = json!(def.api_version());
    body["kind"] = json!(def.kind);
    meta::meta_mut(&mut body).insert("creationTimestamp".into(), Value::Null);
    body["status"] = status;
    Ok(body)
}
