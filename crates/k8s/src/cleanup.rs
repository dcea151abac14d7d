//! Removing what s3mover created: a [`Tracker`] remembers each object as it is created so that
//! a failed, timed-out or interrupted operation deletes exactly those; [`leftovers`] finds what
//! an operation that could not clean up left, by label, for `k8s cleanup`. Neither ever touches
//! an object without s3mover's labels.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, PropagationPolicy};
use kube::Client;
use serde::Serialize;

use crate::{Error, Result};

/// Kinds of object s3mover creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Kind {
    /// A mover Job (deleted with its pods).
    Job,
    /// A mover pod.
    Pod,
    /// A temporary (or, on failure, a restored) claim.
    PersistentVolumeClaim,
    /// A ConfigMap with the CBT CA.
    ConfigMap,
    /// A VolumeSnapshot.
    VolumeSnapshot,
}

impl Kind {
    fn resource(self) -> ApiResource {
        match self {
            Kind::Job => ApiResource::erase::<Job>(&()),
            Kind::Pod => ApiResource::erase::<Pod>(&()),
            Kind::PersistentVolumeClaim => ApiResource::erase::<PersistentVolumeClaim>(&()),
            Kind::ConfigMap => ApiResource::erase::<ConfigMap>(&()),
            Kind::VolumeSnapshot => crate::resources::volume_snapshot(),
        }
    }

    /// Deletion order: users of an object before the object (a Job's pods hold the claim,
    /// the claim holds the snapshot).
    fn rank(self) -> u8 {
        match self {
            Kind::Job => 0,
            Kind::Pod => 1,
            Kind::PersistentVolumeClaim => 2,
            Kind::ConfigMap => 3,
            Kind::VolumeSnapshot => 4,
        }
    }
}

/// One object s3mover created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjectRef {
    /// Its kind.
    pub kind: Kind,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The operation that created it (empty for objects found by label).
    #[serde(skip)]
    pub operation: String,
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// The objects created by running operations, shared by all of them so that Ctrl-C can clean
/// up everything in flight.
#[derive(Debug, Default)]
pub struct Tracker {
    objects: Mutex<Vec<ObjectRef>>,
}

impl Tracker {
    /// Remembers a created object.
    pub fn add(&self, object: ObjectRef) {
        self.lock().push(object);
    }

    /// Forgets an object (it is to be kept, or was deleted).
    pub fn forget(&self, object: &ObjectRef) {
        self.lock().retain(|o| o != object);
    }

    /// The objects remembered now.
    pub fn objects(&self) -> Vec<ObjectRef> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<ObjectRef>> {
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Deletes `objects` (users first) and waits up to `wait` for them to be gone; forgets each
    /// one deleted. Returns the objects that could not be deleted, with why.
    pub async fn delete(
        &self,
        client: &Client,
        mut objects: Vec<ObjectRef>,
        wait: Duration,
    ) -> Vec<(ObjectRef, String)> {
        objects.sort_by_key(|o| o.kind.rank());
        let mut failed = Vec::new();
        for object in objects {
            match delete_and_wait(client, &object, wait).await {
                Ok(()) => self.forget(&object),
                Err(e) => failed.push((object, e.to_string())),
            }
        }
        failed
    }

    /// Deletes what operation `operation` created.
    pub async fn delete_operation(
        &self,
        client: &Client,
        operation: &str,
        wait: Duration,
    ) -> Vec<(ObjectRef, String)> {
        let objects = self
            .objects()
            .into_iter()
            .filter(|o| o.operation == operation)
            .collect();
        self.delete(client, objects, wait).await
    }

    /// Deletes everything remembered.
    pub async fn delete_all(&self, client: &Client, wait: Duration) -> Vec<(ObjectRef, String)> {
        let objects = self.objects();
        self.delete(client, objects, wait).await
    }
}

fn api(client: &Client, object: &ObjectRef) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), &object.namespace, &object.kind.resource())
}

/// Deletes one object and waits until it is gone. A Job is deleted with background
/// propagation and its pods deleted too: deleting a Job without a propagation policy would
/// orphan them, and an orphaned pod keeps the claim it uses.
pub async fn delete_and_wait(client: &Client, object: &ObjectRef, wait: Duration) -> Result<()> {
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    let objects = api(client, object);
    match objects.delete(&object.name, &params).await {
        Ok(_) => {}
        Err(e) if crate::error::not_found(&e) => {}
        Err(e) => return Err(Error::api(format!("cannot delete {object}"), e)),
    }
    if object.kind == Kind::Job {
        delete_pods_of_job(client, &object.namespace, &object.name).await?;
    }
    let start = Instant::now();
    let mut poll = crate::retry::Poll::new();
    loop {
        match objects.get_opt(&object.name).await {
            Ok(None) => return Ok(()),
            Ok(Some(_)) if start.elapsed() >= wait => {
                return Err(Error::Timeout {
                    what: format!("{object} was not gone"),
                    after: wait,
                })
            }
            Ok(Some(_)) => {}
            Err(e) if start.elapsed() >= wait || crate::error::forbidden(&e) => {
                return Err(Error::api(format!("cannot check that {object} is gone"), e))
            }
            Err(_) => {}
        }
        poll.wait().await;
    }
}

async fn delete_pods_of_job(client: &Client, namespace: &str, job: &str) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let list = pods
        .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}")))
        .await
        .map_err(|e| Error::api(format!("cannot list the pods of Job {namespace}/{job}"), e))?;
    let wait = Duration::from_secs(60);
    for pod in list.items {
        let Some(name) = pod.metadata.name else {
            continue;
        };
        let object = ObjectRef {
            kind: Kind::Pod,
            namespace: namespace.to_string(),
            name,
            operation: String::new(),
        };
        Box::pin(delete_and_wait(client, &object, wait)).await?;
    }
    Ok(())
}

/// The temporary objects s3mover left (by label), in one namespace or all.
pub async fn leftovers(client: &Client, namespace: Option<&str>) -> Result<Vec<ObjectRef>> {
    let selector = crate::labels::temporary_selector();
    let mut found = Vec::new();
    for kind in [
        Kind::Job,
        Kind::Pod,
        Kind::PersistentVolumeClaim,
        Kind::ConfigMap,
        Kind::VolumeSnapshot,
    ] {
        let resource = kind.resource();
        let objects: Api<DynamicObject> = match namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        let list = match objects.list(&ListParams::default().labels(&selector)).await {
            Ok(list) => list,
            // No snapshot CRDs: no snapshots can have been left.
            Err(e) if kind == Kind::VolumeSnapshot && crate::error::not_found(&e) => continue,
            Err(e) => return Err(Error::api(format!("cannot list {kind:?}s"), e)),
        };
        for item in list.items {
            if let (Some(name), Some(ns)) = (item.metadata.name, item.metadata.namespace) {
                found.push(ObjectRef {
                    kind,
                    namespace: ns,
                    name,
                    operation: String::new(),
                });
            }
        }
    }
    Ok(found)
}
