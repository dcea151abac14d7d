//! The RBAC authorizer, evaluated as the real one does: ClusterRoleBindings grant their
//! ClusterRole's rules everywhere, RoleBindings grant their Role's or ClusterRole's rules in
//! their own namespace; a rule matches on verbs, API groups, resources (`res`, `res/sub`,
//! `*`, `*/sub`), resource names and non-resource URLs. Requests of `system:masters` (the
//! admin token) are never checked. Every authenticated user may read discovery and ask
//! about themselves (the `system:discovery` and `system:basic-user` roles).

use serde_json::{json, Value};

use crate::auth::UserInfo;
use crate::resources::find;
use crate::store::{Key, ReadView};

/// What a request wants to do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verb: String,
    /// API group ("" for core).
    pub group: String,
    /// Plural resource; empty for a non-resource request.
    pub resource: String,
    /// Subresource, if any.
    pub subresource: String,
    /// Object name, if the request names one.
    pub name: String,
    /// Namespace, if any.
    pub namespace: String,
    /// Path, for non-resource requests.
    pub path: String,
}

impl Attributes {
    /// Attributes from a `resourceAttributes` / `nonResourceAttributes` review spec.
    pub fn from_review_spec(spec: &Value) -> Attributes {
        let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        if let Some(r) = spec.get("resourceAttributes") {
            Attributes {
                verb: s(r, "verb"),
                group: s(r, "group"),
                resource: s(r, "resource"),
                subresource: s(r, "subresource"),
                name: s(r, "name"),
                namespace: s(r, "namespace"),
                path: String::new(),
            }
        } else {
            let n = spec.get("nonResourceAttributes").unwrap_or(&Value::Null);
            Attributes {
                verb: s(n, "verb"),
                path: s(n, "path"),
                ..Attributes::default()
            }
        }
    }

    fn combined_resource(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }

    /// The real authorizer's reason text: `User "x" cannot create resource "pods" in API
    /// group "" in the namespace "y"`.
    pub fn forbidden_reason(&self, user: &str) -> String {
        if self.resource.is_empty() {
            return format!("User {user:?} cannot {} path {:?}", self.verb, self.path);
        }
        let resource = self.combined_resource();
        if self.namespace.is_empty() {
            format!(
                "User {user:?} cannot {} resource {resource:?} in API group {:?} at the cluster scope",
                self.verb, self.group
            )
        } else {
            format!(
                "User {user:?} cannot {} resource {resource:?} in API group {:?} in the namespace {:?}",
                self.verb, self.group, self.namespace
            )
        }
    }
}

fn strings(v: &Value, key: &str) -> Vec<String> {
    crate::meta::string_list(&v[key])
}

fn has(list: &[String], want: &str) -> bool {
    list.iter().any(|x| x == "*" || x == want)
}

/// Whether one PolicyRule allows the request.
fn rule_allows(rule: &Value, a: &Attributes) -> bool {
    let verbs = strings(rule, "verbs");
    if !has(&verbs, &a.verb) {
        return false;
    }
    if a.resource.is_empty() {
        return strings(rule, "nonResourceURLs").iter().any(|u| {
            u == "*" || *u == a.path || u.strip_suffix('*').is_some_and(|p| a.path.starts_with(p))
        });
    }
    if !has(&strings(rule, "apiGroups"), &a.group) {
        return false;
    }
    let combined = a.combined_resource();
    let resource_ok = strings(rule, "resources").iter().any(|r| {
        r == "*"
            || *r == combined
            || (!a.subresource.is_empty() && *r == format!("*/{}", a.subresource))
    });
    if !resource_ok {
        return false;
    }
    let names = strings(rule, "resourceNames");
    names.is_empty() || (!a.name.is_empty() && names.contains(&a.name))
}

fn subject_matches(subject: &Value, binding_ns: &str, user: &UserInfo) -> bool {
    let s = |k: &str| subject.get(k).and_then(Value::as_str).unwrap_or("");
    match s("kind") {
        "User" => s("name") == user.username,
        "Group" => user.groups.iter().any(|g| g == s("name")),
        "ServiceAccount" => {
            let ns = if s("namespace").is_empty() {
                binding_ns
            } else {
                s("namespace")
            };
            user.service_account() == Some((ns, s("name")))
        }
        _ => false,
    }
}

/// Rules every authenticated user has (`system:discovery`, `system:basic-user`,
/// `system:public-info-viewer`).
fn builtin_rules() -> Vec<Value> {
    vec![
        json!({"verbs": ["get"], "nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/version", "/version/", "/healthz", "/livez", "/readyz", "/openapi", "/openapi/*"]}),
        json!({"verbs": ["create"], "apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]}),
        json!({"verbs": ["create"], "apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"]}),
    ]
}

/// The rules that apply to `user` for a request in `namespace` ("" for cluster scope).
pub fn rules_for(view: &ReadView<'_>, user: &UserInfo, namespace: &str) -> Vec<Value> {
    let mut rules = builtin_rules();
    let (Some(crb), Some(cr), Some(rb), Some(role)) = (
        find("rbac.authorization.k8s.io", "v1", "clusterrolebindings"),
        find("rbac.authorization.k8s.io", "v1", "clusterroles"),
        find("rbac.authorization.k8s.io", "v1", "rolebindings"),
        find("rbac.authorization.k8s.io", "v1", "roles"),
    ) else {
        return rules;
    };
    let role_rules = |res, ns: &str, name: &str| -> Vec<Value> {
        view.get(&Key::new(res, ns, name))
            .and_then(|r| r.get("rules"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let bound = |binding: &Value, ns: &str| {
        binding
            .get("subjects")
            .and_then(Value::as_array)
            .is_some_and(|subs| subs.iter().any(|s| subject_matches(s, ns, user)))
    };
    for (_, b) in view.list(crb, None) {
        if bound(b, "") && b["roleRef"]["kind"] == "ClusterRole" {
            rules.extend(role_rules(
                cr,
                "",
                b["roleRef"]["name"].as_str().unwrap_or(""),
            ));
        }
    }
    if !namespace.is_empty() {
        for (_, b) in view.list(rb, Some(namespace)) {
            if !bound(b, namespace) {
                continue;
            }
            let name = b["roleRef"]["name"].as_str().unwrap_or("");
            match b["roleRef"]["kind"].as_str() {
                Some("ClusterRole") => rules.extend(role_rules(cr, "", name)),
                Some("Role") => rules.extend(role_rules(role, namespace, name)),
                _ => {}
            }
        }
    }
    rules
}

/// Whether `user` may do what `attrs` describe.
pub fn authorize(view: &ReadView<'_>, user: &UserInfo, attrs: &Attributes) -> bool {
    if user.is_admin() {
        return true;
    }
    rules_for(view, user, &attrs.namespace)
        .iter()
        .any(|r| rule_allows(r, attrs))
}

/// The ClusterRoles and bindings a fresh cluster has that tests and services rely on.
pub fn bootstrap_objects() -> Vec<Value> {
    vec![
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "cluster-admin", "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
            "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                      {"nonResourceURLs": ["*"], "verbs": ["*"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "system:auth-delegator", "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
            "rules": [{"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
                      {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "view", "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
            "rules": [{"apiGroups": ["", "batch", "apps", "storage.k8s.io", "snapshot.storage.k8s.io"],
                       "resources": ["*"], "verbs": ["get", "list", "watch"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "cluster-admin", "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:masters"}]}),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(verb: &str, res: &str, sub: &str, name: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            resource: res.into(),
            subresource: sub.into(),
            name: name.into(),
            namespace: "ns".into(),
            ..Attributes::default()
        }
    }

    #[test]
    fn rules_match_like_rbac() {
        let rule = json!({"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get"]});
        assert!(rule_allows(&rule, &attrs("get", "pods", "", "p")));
        assert!(rule_allows(&rule, &attrs("get", "pods", "log", "p")));
        assert!(!rule_allows(&rule, &attrs("get", "pods", "status", "p")));
        assert!(!rule_allows(&rule, &attrs("list", "pods", "", "")));
        let named = json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["repo"]});
        assert!(rule_allows(&named, &attrs("get", "secrets", "", "repo")));
        assert!(!rule_allows(&named, &attrs("get", "secrets", "", "other")));
        let star = json!({"apiGroups": ["*"], "resources": ["*/status"], "verbs": ["*"]});
        assert!(rule_allows(&star, &attrs("patch", "jobs", "status", "")));
        assert!(!rule_allows(&star, &attrs("patch", "jobs", "", "")));
    }

    #[test]
    fn forbidden_reason_has_the_real_shape() {
        let a = attrs("create", "pods", "", "");
        assert_eq!(
            a.forbidden_reason("system:serviceaccount:ns:sa"),
            "User \"system:serviceaccount:ns:sa\" cannot create resource \"pods\" in API group \"\" in the namespace \"ns\""
        );
    }
}
