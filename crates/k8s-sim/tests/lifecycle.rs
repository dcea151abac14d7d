//! Object lifecycles beyond plain CRUD, through kube-rs: graceful deletion of pods a kubelet
//! runs, namespace deletion, deletecollection by label, metadata-only lists, field
//! selectors, the `/sim/` fault controls over HTTP, and RBAC on subresources
//! (`serviceaccounts/token`).

mod sim_api;

use sim_api::{api_err, obj};

use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Pod, ServiceAccount};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::Api;
use serde_json::json;

#[tokio::test]
async fn running_pods_wait_for_their_kubelet() {
    let sim = sim_api::start().await;
    let pods: Api<Pod> = Api::namespaced(sim.cluster.client(), "default");
    let spec = |node: Option<&str>| {
        let mut p = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x"}]}});
        if let Some(n) = node {
            p["spec"]["nodeName"] = json!(n);
        }
        obj::<Pod>(p)
    };
    // A pod on a node is marked, with its grace period, and stays.
    let pod = pods
        .create(&PostParams::default(), &spec(Some("n1")))
        .await
        .unwrap();
    assert_eq!(
        pod.spec.as_ref().unwrap().restart_policy.as_deref(),
        Some("Always")
    );
    let marked = pods
        .delete("p", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .unwrap();
    assert_eq!(marked.metadata.deletion_grace_period_seconds, Some(30));
    assert!(pods
        .get("p")
        .await
        .unwrap()
        .metadata
        .deletion_timestamp
        .is_some());
    // The kubelet's confirmation (grace 0) removes it.
    pods.delete(
        "p",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(api_err(pods.get("p").await.unwrap_err()).code, 404);
    // A pod no node runs goes at once.
    pods.create(&PostParams::default(), &spec(None))
        .await
        .unwrap();
    pods.delete("p", &DeleteParams::default()).await.unwrap();
    assert_eq!(api_err(pods.get("p").await.unwrap_err()).code, 404);
}

#[tokio::test]
async fn a_deleted_namespace_takes_its_content_and_refuses_new_objects() {
    let sim = sim_api::start().await;
    let client = sim.cluster.client();
    let nss: Api<Namespace> = Api::all(client.clone());
    let ns = nss
        .create(
            &PostParams::default(),
            &obj(json!({"metadata": {"name": "doomed"}})),
        )
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "doomed");
    // The namespace came with its default service account and root CA.
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "doomed");
    sas.get("default").await.unwrap();
    let ca = cms.get("kube-root-ca.crt").await.unwrap();
    assert_eq!(ca.data.unwrap()["ca.crt"], sim.cluster.ca_pem());
    cms.create(
        &PostParams::default(),
        &obj(json!({"metadata": {"name": "held", "finalizers": ["example.com/x"]}})),
    )
    .await
    .unwrap();
    nss.delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    let terminating = nss.get("doomed").await.unwrap();
    assert_eq!(
        terminating.status.unwrap().phase.as_deref(),
        Some("Terminating")
    );
    let e = api_err(
        cms.create(
            &PostParams::default(),
            &obj(json!({"metadata": {"name": "late"}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 403);
    assert!(
        e.message.contains("because it is being terminated"),
        "{}",
        e.message
    );
    // The finalizer holds the namespace until it is removed.
    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    await_condition(
        nss.clone(),
        "doomed",
        conditions::is_deleted(&ns.metadata.uid.unwrap()),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn deletecollection_metadata_lists_and_field_selectors() {
    let sim = sim_api::start().await;
    let client = sim.cluster.client();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for (name, tier) in [("a", "x"), ("b", "x"), ("c", "y")] {
        cms.create(
            &PostParams::default(),
            &obj(json!({"metadata": {"name": name, "labels": {"tier": tier}}})),
        )
        .await
        .unwrap();
    }
    let meta = cms
        .list_metadata(&ListParams::default().labels("tier"))
        .await
        .unwrap();
    let mut names: Vec<String> = meta
        .items
        .iter()
        .map(|m| m.metadata.name.clone().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["a", "b", "c"]);
    cms.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("tier=x"),
    )
    .await
    .unwrap();
    let left = cms
        .list(&ListParams::default().labels("tier"))
        .await
        .unwrap();
    assert_eq!(left.items.len(), 1);
    assert_eq!(left.items[0].metadata.name.as_deref(), Some("c"));
    let one = cms
        .list(&ListParams::default().fields("metadata.name=c"))
        .await
        .unwrap();
    assert_eq!(one.items.len(), 1);

    // Events are found by the object they are about, across all namespaces.
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    events
        .create(&PostParams::default(), &obj(json!({"metadata": {"name": "e1"},
            "involvedObject": {"kind": "PersistentVolumeClaim", "name": "data", "namespace": "default"},
            "reason": "ProvisioningFailed", "message": "no space", "type": "Warning"})))
        .await
        .unwrap();
    let all: Api<Event> = Api::all(client);
    let found = all
        .list(
            &ListParams::default()
                .fields("involvedObject.kind=PersistentVolumeClaim,involvedObject.name=data"),
        )
        .await
        .unwrap();
    assert_eq!(found.items.len(), 1);
    assert_eq!(found.items[0].message.as_deref(), Some("no space"));
}

#[tokio::test]
async fn faults_are_armed_over_http_by_the_admin_only() {
    let sim = sim_api::start().await;
    let client = sim.cluster.client();
    let arm = |body: serde_json::Value| {
        http::Request::post("/sim/faults")
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).unwrap())
            .unwrap()
    };
    let _: serde_json::Value = client
        .request(arm(json!({"pathContains": "/namespaces/default/configmaps", "method": "GET", "status": 500, "count": 1})))
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    assert_eq!(
        api_err(cms.list(&ListParams::default()).await.unwrap_err()).code,
        500
    );
    cms.list(&ListParams::default()).await.unwrap();
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    sas.create(
        &PostParams::default(),
        &obj(json!({"metadata": {"name": "someone"}})),
    )
    .await
    .unwrap();
    let other = sim.client_as("default", "someone").await;
    let e = other
        .request::<serde_json::Value>(arm(json!({"status": 500, "count": 1})))
        .await
        .unwrap_err();
    assert_eq!(api_err(e).code, 403);
}

#[tokio::test]
async fn rbac_covers_subresources_like_serviceaccount_tokens() {
    let sim = sim_api::start().await;
    let admin = sim.cluster.client();
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), "default");
    for n in ["orchestrator", "mover"] {
        sas.create(
            &PostParams::default(),
            &obj(json!({"metadata": {"name": n}})),
        )
        .await
        .unwrap();
    }
    let roles: Api<k8s_openapi::api::rbac::v1::Role> = Api::namespaced(admin.clone(), "default");
    roles
        .create(&PostParams::default(), &obj(json!({"metadata": {"name": "tokens"}, "rules": [
            {"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"], "resourceNames": ["mover"]}]})))
        .await
        .unwrap();
    let rbs: Api<k8s_openapi::api::rbac::v1::RoleBinding> =
        Api::namespaced(admin.clone(), "default");
    rbs.create(
        &PostParams::default(),
        &obj(json!({"metadata": {"name": "tokens"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "tokens"},
        "subjects": [{"kind": "ServiceAccount", "name": "orchestrator"}]})),
    )
    .await
    .unwrap();
    let orch = sim.client_as("default", "orchestrator").await;
    let request = |sa: &str| {
        http::Request::post(format!(
            "/api/v1/namespaces/default/serviceaccounts/{sa}/token"
        ))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&json!({"spec": {"audiences": ["x"]}})).unwrap())
        .unwrap()
    };
    let ok: serde_json::Value = orch.request(request("mover")).await.unwrap();
    let mover_token = ok["status"]["token"].as_str().unwrap();
    assert_eq!(
        sim.cluster
            .review_token(mover_token, &["x"])
            .unwrap()
            .username,
        "system:serviceaccount:default:mover"
    );
    let e = api_err(
        orch.request::<serde_json::Value>(request("orchestrator"))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.message, "serviceaccounts \"orchestrator\" is forbidden: User \"system:serviceaccount:default:orchestrator\" cannot create resource \"serviceaccounts/token\" in API group \"\" in the namespace \"default\"");
    // Reading the service account itself is another permission.
    let as_orch: Api<ServiceAccount> = Api::namespaced(orch, "default");
    assert_eq!(api_err(as_orch.get("mover").await.unwrap_err()).code, 403);
}

#[tokio::test]
async fn pods_get_their_service_account_token_volume_and_need_the_account() {
    let sim = sim_api::start().await;
    let pods: Api<Pod> = Api::namespaced(sim.cluster.client(), "default");
    let pod = pods
        .create(
            &PostParams::default(),
            &obj(json!({"metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "x"}]}})),
        )
        .await
        .unwrap();
    let spec = pod.spec.unwrap();
    assert_eq!(spec.service_account_name.as_deref(), Some("default"));
    let vol = spec
        .volumes
        .unwrap()
        .into_iter()
        .find(|v| v.name.starts_with("kube-api-access-"))
        .unwrap();
    let sources = vol.projected.unwrap().sources.unwrap();
    assert_eq!(
        sources[0].service_account_token.as_ref().unwrap().path,
        "token"
    );
    let mounts = spec.containers[0].volume_mounts.clone().unwrap();
    assert_eq!(
        mounts[0].mount_path,
        "/var/run/secrets/kubernetes.io/serviceaccount"
    );
    assert_eq!(mounts[0].name, vol.name);

    let no_mount = pods
        .create(&PostParams::default(), &obj(json!({"metadata": {"name": "q"},
            "spec": {"automountServiceAccountToken": false, "containers": [{"name": "c", "image": "x"}]}})))
        .await
        .unwrap();
    assert!(no_mount.spec.unwrap().volumes.is_none());

    let e = api_err(
        pods.create(&PostParams::default(), &obj(json!({"metadata": {"name": "r"},
            "spec": {"serviceAccountName": "missing", "containers": [{"name": "c", "image": "x"}]}})))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 403);
    assert_eq!(e.message, "pods \"r\" is forbidden: error looking up service account default/missing: serviceaccount \"missing\" not found");
}

#[tokio::test]
async fn watchers_survive_compaction_and_get_bookmarks_and_streaming_lists() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = s3mover_k8s_sim::SimOptions::api_only(dir.path());
    opts.bookmark_interval = std::time::Duration::from_millis(50);
    let cluster = s3mover_k8s_sim::SimCluster::start(opts).await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(cluster.client(), "default");
    use futures::{StreamExt, TryStreamExt};
    use kube::runtime::watcher;

    // A streaming list (sendInitialEvents) ends its initial events with InitDone.
    let mut stream = watcher(cms.clone(), watcher::Config::default().streaming_lists()).boxed();
    let mut initial = Vec::new();
    loop {
        match stream.try_next().await.unwrap().unwrap() {
            watcher::Event::InitApply(o) => initial.push(o.metadata.name.unwrap()),
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(initial, ["kube-root-ca.crt"]);
    // Compaction plus a dropped watch: the watcher's re-watch gets 410, it relists, and it
    // still sees what changed meanwhile.
    cluster.compact();
    cluster.drop_watches();
    cms.create(
        &PostParams::default(),
        &obj(json!({"metadata": {"name": "later"}})),
    )
    .await
    .unwrap();
    loop {
        match stream.try_next().await {
            Ok(Some(watcher::Event::Apply(o) | watcher::Event::InitApply(o)))
                if o.metadata.name.as_deref() == Some("later") =>
            {
                break
            }
            Ok(Some(_)) | Err(_) => {}
            Ok(None) => panic!("the watcher ended"),
        }
    }

    // A raw watch (kube-rs allows bookmarks by default) gets them.
    let mut raw = cms
        .watch(&kube::api::WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    loop {
        if let kube::api::WatchEvent::Bookmark(b) = raw.try_next().await.unwrap().unwrap() {
            assert!(!b.metadata.resource_version.is_empty());
            break;
        }
    }
}

#[tokio::test]
async fn a_watch_ends_at_its_timeout() {
    use futures::{StreamExt, TryStreamExt};
    let sim = sim_api::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(sim.cluster.client(), "default");
    let mut w = cms
        .watch(
            &kube::api::WatchParams::default()
                .timeout(1)
                .disable_bookmarks(),
            "0",
        )
        .await
        .unwrap()
        .boxed();
    // The current object first, then the end of the stream.
    match w.try_next().await.unwrap() {
        Some(kube::api::WatchEvent::Added(o)) => {
            assert_eq!(o.metadata.name.as_deref(), Some("kube-root-ca.crt"))
        }
        other => panic!("expected the current configmap, got {other:?}"),
    }
    assert!(w.try_next().await.unwrap().is_none(), "the watch ended");
}
