//! Core `v1` Events, as `kubectl describe` and `kubectl get events` show them: one Event per
//! object, reason and message, its `count` raised when it happens again (the client-go
//! recorder's aggregation).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};

/// Normal or Warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Something went as it should.
    Normal,
    /// Something a user should look at.
    Warning,
}

/// (involved object uid, reason, message) → (Event name, count).
type Seen = HashMap<(String, String, String), (String, i32)>;

/// Writes Events for the controllers.
#[derive(Clone)]
pub struct Recorder {
    client: kube::Client,
    seen: Arc<Mutex<Seen>>,
}

impl Recorder {
    /// A recorder writing through `client`.
    pub fn new(client: kube::Client) -> Self {
        Recorder {
            client,
            seen: Arc::default(),
        }
    }

    /// Records an event about `obj` from `component` (e.g. `persistentvolume-controller`).
    pub async fn record<K>(&self, obj: &K, kind: Kind, reason: &str, message: &str, component: &str)
    where
        K: Resource<DynamicType = ()>,
    {
        self.record_ref(reference(obj), kind, reason, message, component)
            .await
    }

    /// Records an event about the object `r`.
    pub async fn record_ref(
        &self,
        r: ObjectReference,
        kind: Kind,
        reason: &str,
        message: &str,
        component: &str,
    ) {
        let ns = r.namespace.clone().unwrap_or_else(|| "default".into());
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        let key = (
            r.uid.clone().unwrap_or_default(),
            reason.to_string(),
            message.to_string(),
        );
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let previous = self
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned();
        if let Some((name, count)) = previous {
            let patch = serde_json::json!({ "count": count + 1, "lastTimestamp": now });
            if api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .is_ok()
            {
                self.remember(key, name, count + 1);
                return;
            }
        }
        let name = format!(
            "{}.{:x}",
            r.name.clone().unwrap_or_default(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        );
        let ev = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns),
                ..ObjectMeta::default()
            },
            involved_object: r,
            reason: Some(reason.into()),
            message: Some(message.into()),
            type_: Some(
                match kind {
                    Kind::Normal => "Normal",
                    Kind::Warning => "Warning",
                }
                .into(),
            ),
            source: Some(EventSource {
                component: Some(component.into()),
                host: None,
            }),
            reporting_component: Some(component.into()),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            ..Event::default()
        };
        match api.create(&PostParams::default(), &ev).await {
            Ok(_) => self.remember(key, name, 1),
            Err(e) => tracing::debug!("cannot record event {reason}: {e}"),
        }
    }

    fn remember(&self, key: (String, String, String), name: String, count: i32) {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, (name, count));
    }
}

/// An ObjectReference to a typed object.
pub fn reference<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: Some(obj.name_any()),
        namespace: obj.namespace(),
        uid: obj.uid(),
        resource_version: obj.resource_version(),
        field_path: None,
    }
}

/// An ObjectReference to a dynamic object.
pub fn dyn_reference(
    obj: &kube::api::DynamicObject,
    api_version: &str,
    kind: &str,
) -> ObjectReference {
    ObjectReference {
        api_version: Some(api_version.into()),
        kind: Some(kind.into()),
        name: Some(obj.name_any()),
        namespace: obj.namespace(),
        uid: obj.uid(),
        resource_version: obj.resource_version(),
        field_path: None,
    }
}
