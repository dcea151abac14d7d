//! Request handling: authentication, injected faults, discovery, and routing of resource
//! paths (`/api/v1/namespaces/NS/pods/NAME/status`, `/apis/GROUP/VERSION/...`, the legacy
//! `/watch/` prefix) to get, list, watch, create, update, patch, delete and
//! deletecollection, each checked by RBAC for service-account users.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{json, Value};

use crate::auth::{unix_now, TokenIssuer, UserInfo, API_AUDIENCE};
use crate::crud::{self, DeleteOptions};
use crate::faults::Faults;
use crate::patch::{self, PatchType};
use crate::rbac::{self, Attributes};
use crate::resources::{self, ResId, Shape, RESOURCES};
use crate::selector::{FieldSelector, LabelSelector};
use crate::server::{self, Body};
use crate::status::{self, ApiError};
use crate::store::{Key, Store};
use crate::table::{self, As};
use crate::{crds, meta, openapi, proto, reviews, typed, watch};

/// Answers `GET .../pods/NAME/log`: `(namespace, pod, container)` to the log text, or
/// `None` when there is none.
pub type LogSource = Arc<dyn Fn(&str, &str, Option<&str>) -> Option<String> + Send + Sync>;

/// Everything requests share.
pub struct ApiState {
    /// The objects.
    pub store: Arc<Store>,
    /// Service-account token issuer and verifier.
    pub issuer: TokenIssuer,
    /// Injected faults.
    pub faults: Faults,
    /// The admin bearer token.
    pub admin_token: String,
    /// The cluster CA, PEM.
    pub ca_pem: String,
    /// `host:port` the server is reached at.
    pub address: String,
    /// Bumped to end every open watch.
    pub drop_watches: tokio::sync::watch::Sender<u64>,
    /// How often watches that allow bookmarks get one.
    pub bookmark_interval: Duration,
    /// Where pod logs come from, if not from files under `state_dir` (see [`pod_log_path`]).
    pub logs: RwLock<Option<LogSource>>,
    /// The cluster's state directory.
    pub state_dir: std::path::PathBuf,
    /// The rests of paginated lists.
    pub pages: crate::pages::Pages,
}

/// One request, read whole, with its authenticated user.
pub struct Request {
    /// HTTP method.
    pub method: Method,
    /// URL path.
    pub path: String,
    /// Query parameters.
    pub query: HashMap<String, String>,
    /// `Accept` header.
    pub accept: String,
    /// `Content-Type` header.
    pub content_type: String,
    /// Body.
    pub body: Bytes,
    /// Who is asking.
    pub user: UserInfo,
}

impl Request {
    /// A query parameter, if present and not empty.
    pub fn q(&self, k: &str) -> Option<String> {
        self.query.get(k).filter(|v| !v.is_empty()).cloned()
    }

    fn flag(&self, k: &str) -> bool {
        self.query.get(k).is_some_and(|v| v == "true" || v == "1")
    }
}

/// What a resource path names.
#[derive(Debug, Clone)]
pub struct Target {
    /// The resource.
    pub res: ResId,
    /// Namespace ("" for cluster scope or all namespaces).
    pub ns: String,
    /// Object name ("" for the collection).
    pub name: String,
    /// Subresource ("" for the object).
    pub sub: String,
    /// The legacy `/watch/` path prefix was used.
    pub watch_prefix: bool,
}

impl Target {
    /// The store key of the named object.
    pub fn key(&self) -> Key {
        let ns = if RESOURCES[self.res].namespaced {
            self.ns.as_str()
        } else {
            ""
        };
        Key::new(self.res, ns, &self.name)
    }
}

fn authenticate(state: &ApiState, headers: &http::HeaderMap) -> Option<UserInfo> {
    let token = headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?
        .trim();
    if token == state.admin_token {
        return Some(UserInfo::admin());
    }
    let claims = state
        .issuer
        .verify(token, &[API_AUDIENCE.to_string()], unix_now())
        .ok()?;
    reviews::service_account_current(state, &claims).then(|| claims.user())
}

/// Handles one HTTP request; `None` when an injected fault (status 0) says to drop the
/// connection without an answer.
pub async fn handle(
    state: Arc<ApiState>,
    req: http::Request<Incoming>,
) -> Option<http::Response<Body>> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Some(server::error(&ApiError::bad_request(format!(
                "reading body: {e}"
            ))))
        }
    };
    let path = parts.uri.path().trim_end_matches('/').to_string();
    let path = if path.is_empty() {
        "/".to_string()
    } else {
        path
    };
    let query: HashMap<String, String> = parts
        .uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let header = |h: http::header::HeaderName| {
        parts
            .headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    if matches!(
        path.as_str(),
        "/version" | "/healthz" | "/livez" | "/readyz"
    ) {
        return Some(public(&path));
    }
    let Some(user) = authenticate(&state, &parts.headers) else {
        return Some(server::error(&ApiError::unauthorized()));
    };
    let req = Request {
        method: parts.method,
        path,
        query,
        accept: header(http::header::ACCEPT),
        content_type: header(http::header::CONTENT_TYPE),
        body,
        user,
    };
    if req.path.starts_with("/sim/") {
        return Some(sim_admin(&state, &req));
    }
    let is_watch = req.flag("watch") || req.path.contains("/watch/");
    if let Some(code) = state.faults.take(req.method.as_str(), &req.path, is_watch) {
        if code == 0 {
            return None;
        }
        let reason = match code {
            429 => "TooManyRequests",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "InternalError",
        };
        return Some(server::error(&ApiError::new(
            code,
            reason,
            format!("injected fault: {code}"),
        )));
    }
    Some(match route(&state, &req).await {
        Ok(resp) => resp,
        Err(e) => server::error(&e),
    })
}

fn public(path: &str) -> http::Response<Body> {
    if path == "/version" {
        return server::json(200, &version());
    }
    server::text(200, "ok".into())
}

/// `/version`: a Kubernetes 1.32 server.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": "v1.32.0-s3mover-sim",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.23.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `/sim/faults` (POST a [`crate::faults::Fault`]; DELETE clears), `/sim/drop-watches`
/// (POST), `/sim/compact` (POST): the test hooks, admin only.
fn sim_admin(state: &ApiState, req: &Request) -> http::Response<Body> {
    if !req.user.is_admin() {
        return server::error(&ApiError::new(
            403,
            "Forbidden",
            "simulator controls are for the admin",
        ));
    }
    match (req.method.as_str(), req.path.as_str()) {
        ("POST", "/sim/faults") => match serde_json::from_slice(&req.body) {
            Ok(f) => {
                state.faults.arm(f);
                server::json(200, &status::success())
            }
            Err(e) => server::error(&ApiError::bad_request(format!("bad fault: {e}"))),
        },
        ("DELETE", "/sim/faults") => {
            state.faults.clear();
            server::json(200, &status::success())
        }
        ("POST", "/sim/drop-watches") => {
            state.drop_watches.send_modify(|n| *n += 1);
            server::json(200, &status::success())
        }
        ("POST", "/sim/compact") => {
            state.store.compact();
            server::json(200, &status::success())
        }
        _ => server::error(&ApiError::path_not_found()),
    }
}

/// Whether a kind is served now: built-in kinds always, a CRD's kinds while the
/// CustomResourceDefinition exists (deleting it stops serving them, as on a real cluster).
pub fn served(state: &ApiState, def: &resources::ResourceDef) -> bool {
    let Some(name) = crds::definition_name(def) else {
        return true;
    };
    let crd = resources::find("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        .expect("CRDs are served");
    state
        .store
        .read(|v| v.get(&Key::new(crd, "", &name)).is_some())
}

async fn route(state: &Arc<ApiState>, req: &Request) -> Result<http::Response<Body>, ApiError> {
    let served = |d: &resources::ResourceDef| served(state, d);
    let segs: Vec<&str> = req.path.split('/').filter(|s| !s.is_empty()).collect();
    let get_only = |v: Value| {
        if req.method == Method::GET {
            Ok(server::json(200, &v))
        } else {
            Err(ApiError::method_not_allowed())
        }
    };
    match segs.as_slice() {
        ["api"] => get_only(resources::api_versions(&state.address)),
        ["apis"] => get_only(resources::api_group_list(&served)),
        ["api", "v1"] => get_only(resources::api_resource_list("", "v1", &served)),
        ["apis", g] => {
            get_only(resources::api_group(g, &served).ok_or_else(ApiError::path_not_found)?)
        }
        ["apis", g, v] if resources::serves_group_version(g, v) => {
            get_only(resources::api_resource_list(g, v, &served))
        }
        ["openapi", "v3"] => get_only(openapi::root()),
        ["openapi", "v3", "api", v] => {
            get_only(openapi::group_version("", v).ok_or_else(ApiError::path_not_found)?)
        }
        ["openapi", "v3", "apis", g, v] => {
            get_only(openapi::group_version(g, v).ok_or_else(ApiError::path_not_found)?)
        }
        ["api", "v1", rest @ ..] => {
            let t = parse_target("", "v1", rest)?;
            resource(state, req, t).await
        }
        ["apis", g, v, rest @ ..] if resources::serves_group_version(g, v) => {
            let t = parse_target(g, v, rest)?;
            resource(state, req, t).await
        }
        _ => Err(ApiError::path_not_found()),
    }
}

/// Parses the part of a resource path after the group/version.
pub fn parse_target(group: &str, version: &str, rest: &[&str]) -> Result<Target, ApiError> {
    let (watch_prefix, rest) = match rest {
        ["watch", r @ ..] => (true, r),
        r => (false, r),
    };
    let lookup =
        |plural: &str| resources::find(group, version, plural).ok_or_else(ApiError::path_not_found);
    let target = |res, ns: &str, name: Option<&&str>, sub: Option<&&str>| Target {
        res,
        ns: ns.to_string(),
        name: name.map(|s| s.to_string()).unwrap_or_default(),
        sub: sub.map(|s| s.to_string()).unwrap_or_default(),
        watch_prefix,
    };
    match rest {
        ["namespaces", ns, plural, tail @ ..]
            if resources::find(group, version, plural).is_some_and(|r| RESOURCES[r].namespaced) =>
        {
            if tail.len() > 2 {
                return Err(ApiError::path_not_found());
            }
            Ok(target(lookup(plural)?, ns, tail.first(), tail.get(1)))
        }
        [plural, tail @ ..] if tail.len() <= 2 => {
            let res = lookup(plural)?;
            Ok(target(res, "", tail.first(), tail.get(1)))
        }
        _ => Err(ApiError::path_not_found()),
    }
}

fn verb(req: &Request, t: &Target) -> &'static str {
    match (&req.method, t.name.is_empty()) {
        (&Method::GET, true) if req.flag("watch") || t.watch_prefix => "watch",
        (&Method::GET, false) if t.watch_prefix => "watch",
        (&Method::GET, true) => "list",
        (&Method::GET, false) => "get",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, true) => "deletecollection",
        (&Method::DELETE, false) => "delete",
        _ => "",
    }
}

/// The request body as JSON: parsed, or decoded from Kubernetes' protobuf encoding.
pub fn parse_body(req: &Request) -> Result<Value, ApiError> {
    if req
        .content_type
        .starts_with("application/vnd.kubernetes.protobuf")
    {
        return proto::decode(&req.body).map_err(|e| {
            ApiError::new(
                415,
                "UnsupportedMediaType",
                format!("the body of the request could not be decoded from protobuf: {e}"),
            )
        });
    }
    serde_json::from_slice(&req.body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/vnd.kubernetes.protobuf: {e}"
        ))
    })
}

async fn resource(
    state: &Arc<ApiState>,
    req: &Request,
    t: Target,
) -> Result<http::Response<Body>, ApiError> {
    let def = &RESOURCES[t.res];
    if !served(state, def) {
        return Err(ApiError::path_not_found());
    }
    if !t.sub.is_empty() && !def.subresources.contains(&t.sub.as_str()) {
        return Err(ApiError::path_not_found());
    }
    let verb = verb(req, &t);
    if verb.is_empty() {
        return Err(ApiError::method_not_allowed());
    }
    let attrs = Attributes {
        verb: verb.into(),
        group: def.group.into(),
        resource: def.plural.into(),
        subresource: t.sub.clone(),
        name: t.name.clone(),
        namespace: if def.namespaced {
            t.ns.clone()
        } else {
            String::new()
        },
        path: req.path.clone(),
    };
    let allowed = state
        .store
        .read(|view| rbac::authorize(view, &req.user, &attrs));
    if !allowed {
        return Err(ApiError::forbidden(
            def,
            &t.name,
            &attrs.forbidden_reason(&req.user.username),
        ));
    }
    if def.shape == Shape::Review {
        return if verb == "create" {
            reviews::review(state, req, &t).map(|v| server::json(201, &v))
        } else {
            Err(ApiError::method_not_allowed())
        };
    }
    if def.namespaced && t.ns.is_empty() && !t.name.is_empty() {
        return Err(ApiError::path_not_found());
    }
    match (verb, t.sub.as_str()) {
        ("create", "token") => {
            reviews::token_request(state, req, &t).map(|v| server::json(201, &v))
        }
        ("get", "log") => pod_log(state, req, &t),
        ("watch", _) => watch::watch(state, req, &t),
        ("list", _) => list(state, req, &t),
        ("get", _) => get(state, req, &t),
        ("create", "") => {
            let (obj, warnings) = typed_body(def, req, parse_body(req)?)?;
            let ns = if def.namespaced { t.ns.as_str() } else { "" };
            let created = state.store.write_or_dry_run(dry_run(req)?, |txn| {
                crud::create(txn, t.res, ns, obj, &state.ca_pem)
            })?;
            Ok(server::warn(server::json(201, &created), &warnings))
        }
        ("update", sub) => {
            let (obj, warnings) = typed_body(def, req, parse_body(req)?)?;
            let status_only = sub == "status";
            let updated = state.store.write_or_dry_run(dry_run(req)?, |txn| {
                crud::update(txn, &t.key(), obj, status_only)
            })?;
            Ok(server::warn(server::json(200, &updated), &warnings))
        }
        ("patch", sub) => patch_object(state, req, &t, sub == "status"),
        ("delete", "") => {
            let opts = DeleteOptions::parse(&req.body, &|k| req.q(k))?;
            let gone = state
                .store
                .write_or_dry_run(delete_dry_run(req, &opts)?, |txn| {
                    crud::delete(txn, &t.key(), &opts)
                })?;
            Ok(server::json(200, &gone))
        }
        ("deletecollection", "") => {
            let opts = DeleteOptions::parse(&req.body, &|k| req.q(k))?;
            let (labels, fields) = selectors(req)?;
            let ns = (!t.ns.is_empty()).then_some(t.ns.as_str());
            let deleted = state
                .store
                .write_or_dry_run(delete_dry_run(req, &opts)?, |txn| {
                    let mut out = Vec::new();
                    for (key, obj) in txn.list(t.res, ns) {
                        if labels.matches(&obj) && fields.matches(&obj) {
                            if let Ok(o) = crud::delete(txn, &key, &opts) {
                                out.push(o);
                            }
                        }
                    }
                    (out, txn.rv())
                });
            Ok(server::json(200, &list_object(t.res, deleted.0, deleted.1)))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// Whether a write is a dry run: `dryRun=All` is, no `dryRun` is not, and any other value is
/// refused as the API server refuses it.
fn dry_run(req: &Request) -> Result<bool, ApiError> {
    dry_run_of(req.q("dryRun").as_slice())
}

/// The same for a delete, whose `DeleteOptions` body may carry `dryRun` too.
fn delete_dry_run(req: &Request, opts: &DeleteOptions) -> Result<bool, ApiError> {
    Ok(dry_run(req)? || dry_run_of(&opts.dry_run)?)
}

fn dry_run_of(values: &[String]) -> Result<bool, ApiError> {
    let mut dry = false;
    for value in values {
        match value.as_str() {
            "All" => dry = true,
            other => {
                return Err(ApiError::bad_request(format!(
                    "Invalid value: \"{other}\": supported values: \"All\""
                )))
            }
        }
    }
    Ok(dry)
}

/// The label and field selectors of a list or watch.
pub fn selectors(req: &Request) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = LabelSelector::parse(&req.q("labelSelector").unwrap_or_default())
        .map_err(ApiError::bad_request)?;
    let fields = FieldSelector::parse(&req.q("fieldSelector").unwrap_or_default())
        .map_err(ApiError::bad_request)?;
    Ok((labels, fields))
}

/// A `KindList` of objects at resourceVersion `rv`.
pub fn list_object(res: ResId, items: Vec<Value>, rv: u64) -> Value {
    let def = &RESOURCES[res];
    json!({
        "kind": format!("{}List", def.kind),
        "apiVersion": def.api_version(),
        "metadata": {"resourceVersion": rv.to_string()},
        "items": items,
    })
}

fn list(state: &ApiState, req: &Request, t: &Target) -> Result<http::Response<Body>, ApiError> {
    let (labels, fields) = selectors(req)?;
    let ns = (!t.ns.is_empty()).then_some(t.ns.as_str());
    let limit = match req.q("limit") {
        None => 0,
        Some(n) => n
            .parse::<usize>()
            .map_err(|_| ApiError::bad_request(format!("invalid limit {n:?}")))?,
    };
    let scope = format!(
        "{}/{}?{}&{}",
        t.res,
        t.ns,
        req.q("labelSelector").unwrap_or_default(),
        req.q("fieldSelector").unwrap_or_default()
    );
    let page = match req.q("continue") {
        Some(token) => state.pages.next(scope, &token, limit)?,
        None => {
            let (items, rv) = state.store.read(|view| {
                let items: Vec<Value> = view
                    .list(t.res, ns)
                    .into_iter()
                    .map(|(_, o)| o)
                    .filter(|o| labels.matches(o) && fields.matches(o))
                    .cloned()
                    .collect();
                (items, view.rv())
            });
            state.pages.first(scope, items, rv, limit)
        }
    };
    let def = &RESOURCES[t.res];
    let mut body = match As::from_accept(&req.accept) {
        As::Table => table::table(
            def,
            &page.items,
            page.rv,
            &req.q("includeObject").unwrap_or_default(),
        ),
        As::Metadata => table::partial_list(&page.items, page.rv),
        As::Object => list_object(t.res, page.items, page.rv),
    };
    if let Some(token) = page.continue_token {
        body["metadata"]["continue"] = token.into();
        if labels.is_empty() && fields.is_empty() {
            body["metadata"]["remainingItemCount"] = page.remaining.into();
        }
    }
    Ok(server::json(200, &body))
}

fn get(state: &ApiState, req: &Request, t: &Target) -> Result<http::Response<Body>, ApiError> {
    let def = &RESOURCES[t.res];
    let (obj, rv) = state
        .store
        .read(|view| (view.get(&t.key()).cloned(), view.rv()));
    let obj = obj.ok_or_else(|| ApiError::not_found(def, &t.name))?;
    Ok(match As::from_accept(&req.accept) {
        As::Table => server::json(
            200,
            &table::table(def, &[obj], rv, &req.q("includeObject").unwrap_or_default()),
        ),
        As::Metadata => server::json(200, &table::partial(&obj)),
        As::Object => server::json(200, &obj),
    })
}

fn patch_object(
    state: &ApiState,
    req: &Request,
    t: &Target,
    status_only: bool,
) -> Result<http::Response<Body>, ApiError> {
    let def = &RESOURCES[t.res];
    let ty = PatchType::from_content_type(&req.content_type).ok_or_else(|| {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {:?})", req.content_type),
        )
    })?;
    let key = t.key();
    let (code, obj, warnings) = state.store.write_or_dry_run(dry_run(req)?, |txn| {
        let Some(current) = txn.get(&key).cloned() else {
            if ty == PatchType::Apply && !status_only {
                let obj = patch::apply(ty, &json!({}), &req.body).map_err(ApiError::bad_request)?;
                let (obj, warnings) = typed_body(def, req, obj)?;
                let ns = if def.namespaced { t.ns.as_str() } else { "" };
                return crud::create(txn, t.res, ns, obj, &state.ca_pem)
                    .map(|o| (201, o, warnings));
            }
            return Err(ApiError::not_found(def, &t.name));
        };
        let mut patched = patch::apply(ty, &current, &req.body).map_err(|e| {
            ApiError::new(
                422,
                "Invalid",
                format!("{} \"{}\" is invalid: {e}", def.kind, t.name),
            )
        })?;
        // A patch that names no other resourceVersion applies to the current object; one
        // that does is conditional, like an update.
        if meta::str_field(&patched, "resourceVersion")
            == meta::str_field(&current, "resourceVersion")
        {
            meta::meta_mut(&mut patched).remove("resourceVersion");
        }
        let (patched, warnings) = typed_body(def, req, patched)?;
        crud::update(txn, &key, patched, status_only).map(|o| (200, o, warnings))
    })?;
    Ok(server::warn(server::json(code, &obj), &warnings))
}

/// A written object decoded as its kind (see [`typed`]); one whose apiVersion or kind names
/// another kind is left for the write to refuse with the real message.
fn typed_body(
    def: &resources::ResourceDef,
    req: &Request,
    mut obj: Value,
) -> Result<(Value, Vec<String>), ApiError> {
    let Some(m) = obj.as_object_mut() else {
        return Ok((obj, Vec::new()));
    };
    let api_version = json!(def.api_version());
    let kind = json!(def.kind);
    let same_av = *m.entry("apiVersion").or_insert_with(|| api_version.clone()) == api_version;
    let same_kind = *m.entry("kind").or_insert_with(|| kind.clone()) == kind;
    if !same_av || !same_kind {
        return Ok((obj, Vec::new()));
    }
    let validation = typed::FieldValidation::parse(req.q("fieldValidation").as_deref());
    typed::normalize(def, obj, validation)
}

/// Where a kubelet writes a container's log: `STATE_DIR/pod-logs/NS/POD/CONTAINER.log`.
pub fn pod_log_path(
    state_dir: &std::path::Path,
    ns: &str,
    pod: &str,
    container: &str,
) -> std::path::PathBuf {
    state_dir
        .join("pod-logs")
        .join(ns)
        .join(pod)
        .join(format!("{container}.log"))
}

/// `GET .../pods/NAME/log`: from the registered [`LogSource`], else from the file at
/// [`pod_log_path`]; `container` defaults to the pod's only (or first) container and
/// `tailLines` keeps the last lines.
fn pod_log(state: &ApiState, req: &Request, t: &Target) -> Result<http::Response<Body>, ApiError> {
    let def = &RESOURCES[t.res];
    let Some(pod) = state.store.read(|v| v.get(&t.key()).cloned()) else {
        return Err(ApiError::not_found(def, &t.name));
    };
    let container = req.q("container").unwrap_or_else(|| {
        pod["spec"]["containers"][0]["name"]
            .as_str()
            .unwrap_or("")
            .to_string()
    });
    let source = state.logs.read().unwrap_or_else(|p| p.into_inner()).clone();
    let text = match source {
        Some(f) => f(&t.ns, &t.name, Some(&container)),
        None => {
            std::fs::read_to_string(pod_log_path(&state.state_dir, &t.ns, &t.name, &container)).ok()
        }
    };
    let Some(text) = text else {
        return Err(ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{}\" is waiting to start: ContainerCreating",
            t.name
        )));
    };
    let text = match req.q("tailLines").and_then(|n| n.parse::<usize>().ok()) {
        Some(n) => {
            let lines: Vec<&str> = text.lines().collect();
            let mut out = lines[lines.len().saturating_sub(n)..].join("\n");
            if !out.is_empty() {
                out.push('\n');
            }
            out
        }
        None => text,
    };
    Ok(server::text(200, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_all_is_a_dry_run_value() {
        assert_eq!(dry_run_of(&[]).ok(), Some(false));
        assert_eq!(dry_run_of(&["All".into()]).ok(), Some(true));
        let e = dry_run_of(&["Server".into()]).unwrap_err();
        assert_eq!(e.code, 400);
        assert!(
            e.message.contains("supported values: \"All\""),
            "{}",
            e.message
        );
    }
}
