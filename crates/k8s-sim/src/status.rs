//! API errors as the real API server reports them: a `meta/v1` `Status` object with the HTTP
//! code, a machine-readable reason and the message shapes clients and people know
//! (`pods "x" not found`, `... is forbidden: User "..." cannot ...`).

use serde_json::{json, Value};

use crate::resources::ResourceDef;

/// An error answer of the API server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `Status.reason` (`NotFound`, `AlreadyExists`, `Conflict`, `Invalid`, `Forbidden`, ...).
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
    /// `Status.details`, when the error concerns one object.
    pub details: Option<Value>,
}

fn details(def: &ResourceDef, name: &str) -> Value {
    json!({"name": name, "group": def.group, "kind": def.plural})
}

impl ApiError {
    /// An error with no details.
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    /// 404 for an object: `pods "x" not found`.
    pub fn not_found(def: &ResourceDef, name: &str) -> ApiError {
        ApiError {
            code: 404,
            reason: "NotFound",
            message: format!("{} \"{name}\" not found", def.group_resource()),
            details: Some(details(def, name)),
        }
    }

    /// 409 AlreadyExists: `pods "x" already exists`.
    pub fn already_exists(def: &ResourceDef, name: &str) -> ApiError {
        ApiError {
            code: 409,
            reason: "AlreadyExists",
            message: format!("{} \"{name}\" already exists", def.group_resource()),
            details: Some(details(def, name)),
        }
    }

    /// 409 Conflict on a stale resourceVersion.
    pub fn conflict(def: &ResourceDef, name: &str) -> ApiError {
        ApiError {
            code: 409,
            reason: "Conflict",
            message: format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                def.group_resource()
            ),
            details: Some(details(def, name)),
        }
    }

    /// 422 Invalid: `Kind "x" is invalid: field: problem`.
    pub fn invalid(def: &ResourceDef, name: &str, field_problem: &str) -> ApiError {
        ApiError {
            code: 422,
            reason: "Invalid",
            message: format!("{} \"{name}\" is invalid: {field_problem}", def.kind),
            details: Some(json!({"name": name, "group": def.group, "kind": def.kind})),
        }
    }

    /// 403 Forbidden from the admission chain (not RBAC): `pods "x" is forbidden: why`.
    pub fn forbidden(def: &ResourceDef, name: &str, why: &str) -> ApiError {
        let subject = if name.is_empty() {
            def.group_resource()
        } else {
            format!("{} \"{name}\"", def.group_resource())
        };
        ApiError {
            code: 403,
            reason: "Forbidden",
            message: format!("{subject} is forbidden: {why}"),
            details: Some(details(def, name)),
        }
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed() -> ApiError {
        ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    /// 401 Unauthorized.
    pub fn unauthorized() -> ApiError {
        ApiError::new(401, "Unauthorized", "Unauthorized")
    }

    /// 404 for a path that names nothing served.
    pub fn path_not_found() -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    /// 410 Expired for a watch or list from a compacted resourceVersion.
    pub fn expired(rv: u64, oldest: u64) -> ApiError {
        ApiError::new(
            410,
            "Expired",
            format!("too old resource version: {rv} ({oldest})"),
        )
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            status["details"] = d.clone();
        }
        status
    }
}

/// A `Status` of success (what a delete of a whole collection or a review-less call answers).
pub fn success() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})
}
