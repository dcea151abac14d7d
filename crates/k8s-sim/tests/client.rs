//! kube-rs against the simulated API server: CRUD and its errors, optimistic concurrency,
//! the patch types, status subresources, finalizers, garbage collection and propagation
//! defaults, pvc-protection, list/watch (kube-rs' watcher, re-watch after dropped watches,
//! 410 after compaction), paginated lists, TokenRequest/TokenReview, RBAC and injected faults.

mod sim_api;

use sim_api::{api_err, obj};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::authentication::v1::TokenReview;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, ServiceAccount};
use kube::api::{
    DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::wait::{await_condition, conditions};
use kube::runtime::watcher;
use kube::Api;
use serde_json::json;

#[tokio::test]
async fn create_get_update_conflict_and_errors() {
    let sim = sim_api::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(sim.cluster.client(), "default");
    let pp = PostParams::default();
    let cm = cms
        .create(
            &pp,
            &obj(json!({"metadata": {"generateName": "gen-"}, "data": {"a": "1"}})),
        )
        .await
        .unwrap();
    let name = cm.metadata.name.clone().unwrap();
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");
    assert!(cm.metadata.uid.is_some() && cm.metadata.creation_timestamp.is_some());
    let rv1: u64 = cm
        .metadata
        .resource_version
        .clone()
        .unwrap()
        .parse()
        .unwrap();

    let mut newer = cm.clone();
    newer.data = Some([("a".to_string(), "2".to_string())].into());
    let newer = cms.replace(&name, &pp, &newer).await.unwrap();
    let rv2: u64 = newer
        .metadata
        .resource_version
        .clone()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv2 > rv1);
    assert_eq!(
        newer.metadata.generation, None,
        "a ConfigMap has no generation"
    );
    // The first version's resourceVersion is stale now.
    let e = api_err(cms.replace(&name, &pp, &cm).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));

    let dup = obj(json!({"metadata": {"name": name}}));
    let e = api_err(cms.create(&pp, &dup).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (409, "AlreadyExists"));
    let e = api_err(cms.get("absent").await.unwrap_err());
    assert_eq!(e.code, 404);
    assert_eq!(e.message, "configmaps \"absent\" not found");
    let e = api_err(
        cms.create(&pp, &obj(json!({"metadata": {"name": "Bad_Name"}})))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    let elsewhere: Api<ConfigMap> = Api::namespaced(sim.cluster.client(), "no-such-ns");
    let e = api_err(
        elsewhere
            .create(&pp, &obj(json!({"metadata": {"name": "x"}})))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (e.code, e.message.as_str()),
        (404, "namespaces \"no-such-ns\" not found")
    );
}

#[tokio::test]
async fn patch_types() {
    let sim = sim_api::start().await;
    let pods: Api<Pod> = Api::namespaced(sim.cluster.client(), "default");
    let pod = json!({"metadata": {"name": "p", "labels": {"a": "1"}}, "spec": {"containers": [
        {"name": "main", "image": "x", "env": [{"name": "A", "value": "1"}]},
        {"name": "side", "image": "y"}]}});
    pods.create(&PostParams::default(), &obj(pod))
        .await
        .unwrap();
    let pp = PatchParams::default();
    let p = pods
        .patch(
            "p",
            &pp,
            &Patch::Merge(json!({"metadata": {"labels": {"a": null, "b": "2"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        p.metadata.labels.unwrap(),
        [("b".to_string(), "2".to_string())].into()
    );
    let p = pods
        .patch(
            "p",
            &pp,
            &Patch::Strategic(json!({"spec": {"containers": [
            {"name": "main", "env": [{"name": "B", "value": "2"}]}]}})),
        )
        .await
        .unwrap();
    assert_eq!(
        p.metadata.generation,
        Some(2),
        "a spec change counts a generation"
    );
    let cs = p.spec.unwrap().containers;
    assert_eq!(cs.len(), 2, "strategic merge keeps the other container");
    assert_eq!(
        cs[0].env.as_ref().unwrap().len(),
        2,
        "and merges env by name"
    );
    let jp: json_patch::Patch = serde_json::from_value(json!([
        {"op": "add", "path": "/metadata/annotations", "value": {"k": "v"}}]))
    .unwrap();
    let p = pods.patch("p", &pp, &Patch::<()>::Json(jp)).await.unwrap();
    assert_eq!(p.metadata.annotations.unwrap()["k"], "v");
    // A patch naming a stale resourceVersion is conditional and conflicts.
    let e = api_err(
        pods.patch(
            "p",
            &pp,
            &Patch::Merge(json!({"metadata": {"resourceVersion": "1", "labels": {"c": "3"}}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 409);
    // Server-side apply creates, then updates.
    let ssa = PatchParams::apply("test").force();
    let cms: Api<ConfigMap> = Api::namespaced(sim.cluster.client(), "default");
    let applied = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"x": "1"}});
    cms.patch("ssa", &ssa, &Patch::Apply(&applied))
        .await
        .unwrap();
    let applied = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"x": "2"}});
    let cm = cms
        .patch("ssa", &ssa, &Patch::Apply(&applied))
        .await
        .unwrap();
    assert_eq!(cm.data.unwrap()["x"], "2");
}

#[tokio::test]
async fn status_subresource_is_separate_from_the_object() {
    let sim = sim_api::start().await;
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(sim.cluster.client(), "default");
    let pvc = json!({"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "1Gi"}}},
        "status": {"phase": "Bound"}});
    let created = pvcs
        .create(&PostParams::default(), &obj(pvc))
        .await
        .unwrap();
    assert_eq!(
        created.status.as_ref().unwrap().phase.as_deref(),
        Some("Pending"),
        "status is the server's on create"
    );
    assert_eq!(
        created.spec.as_ref().unwrap().volume_mode.as_deref(),
        Some("Filesystem")
    );
    assert_eq!(
        created.metadata.finalizers.as_deref(),
        Some(&["kubernetes.io/pvc-protection".to_string()][..])
    );
    let pp = PatchParams::default();
    let p = pvcs
        .patch(
            "data",
            &pp,
            &Patch::Merge(
                json!({"status": {"phase": "Bound"}, "metadata": {"labels": {"l": "1"}}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        p.status.unwrap().phase.as_deref(),
        Some("Pending"),
        "the main endpoint ignores status"
    );
    let p = pvcs
        .patch_status(
            "data",
            &pp,
            &Patch::Merge(
                json!({"status": {"phase": "Bound"}, "metadata": {"labels": {"l": "2"}}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(p.status.unwrap().phase.as_deref(), Some("Bound"));
    assert_eq!(
        p.metadata.labels.unwrap()["l"],
        "1",
        "the status endpoint ignores the rest"
    );
    // The claim's spec is immutable but for the requested size.
    let e = api_err(
        pvcs.patch(
            "data",
            &pp,
            &Patch::Merge(json!({"spec": {"accessModes": ["ReadWriteMany"]}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    assert!(
        e.message.contains("spec is immutable after creation"),
        "{}",
        e.message
    );
    pvcs.patch(
        "data",
        &pp,
        &Patch::Merge(json!({"spec": {"resources": {"requests": {"storage": "2Gi"}}}})),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let sim = sim_api::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(sim.cluster.client(), "default");
    let cm = cms
        .create(
            &PostParams::default(),
            &obj(json!({"metadata": {"name": "held", "finalizers": ["example.com/hold"]}})),
        )
        .await
        .unwrap();
    let marked = cms
        .delete("held", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .unwrap();
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert!(
        cms.get("held").await.is_ok(),
        "still there while a finalizer is"
    );
    let e = api_err(
        cms.patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"finalizers": ["example.com/hold", "example.com/new"]}}),
            ),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 403);
    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    await_condition(
        cms.clone(),
        "held",
        conditions::is_deleted(&cm.metadata.uid.unwrap()),
    )
    .await
    .unwrap();
    assert_eq!(api_err(cms.get("held").await.unwrap_err()).code, 404);
}

#[tokio::test]
async fn jobs_orphan_their_pods_by_default_and_background_collects() {
    let sim = sim_api::start().await;
    let client = sim.cluster.client();
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let job = json!({"metadata": {"name": "j"}, "spec": {"template": {"spec": {
        "restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}}});
    let mk_pod = |name: &str, job: &Job| {
        let uid = job.metadata.uid.clone().unwrap();
        obj::<Pod>(
            json!({"metadata": {"name": name, "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job",
            "name": job.metadata.name, "uid": uid, "controller": true, "blockOwnerDeletion": true}]},
            "spec": {"containers": [{"name": "c", "image": "x"}]}}),
        )
    };
    let j = jobs
        .create(&PostParams::default(), &obj(job.clone()))
        .await
        .unwrap();
    let sel = j.spec.as_ref().unwrap().selector.as_ref().unwrap();
    assert_eq!(
        sel.match_labels.as_ref().unwrap()["batch.kubernetes.io/controller-uid"],
        j.metadata.uid.clone().unwrap()
    );
    pods.create(&PostParams::default(), &mk_pod("j-1", &j))
        .await
        .unwrap();
    // No propagation policy: a batch/v1 Job orphans its pods.
    jobs.delete("j", &DeleteParams::default()).await.unwrap();
    await_condition(
        jobs.clone(),
        "j",
        conditions::is_deleted(&j.metadata.uid.clone().unwrap()),
    )
    .await
    .unwrap();
    let orphan = pods.get("j-1").await.unwrap();
    assert!(
        orphan.metadata.owner_references.is_none(),
        "the pod was orphaned"
    );

    let j = jobs
        .create(&PostParams::default(), &obj(job))
        .await
        .unwrap();
    let p = pods
        .create(&PostParams::default(), &mk_pod("j-2", &j))
        .await
        .unwrap();
    jobs.delete("j", &DeleteParams::background()).await.unwrap();
    await_condition(
        pods.clone(),
        "j-2",
        conditions::is_deleted(&p.metadata.uid.unwrap()),
    )
    .await
    .unwrap();
    assert!(pods.get("j-1").await.is_ok());
}

#[tokio::test]
async fn pvc_protection_waits_for_pods_even_finished_ones() {
    let sim = sim_api::start().await;
    let client = sim.cluster.client();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pvc = pvcs
        .create(&PostParams::default(), &obj(json!({"metadata": {"name": "c"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})))
        .await
        .unwrap();
    pods.create(
        &PostParams::default(),
        &obj(
            json!({"metadata": {"name": "user"}, "spec": {"nodeName": "n1",
        "containers": [{"name": "c", "image": "x"}],
        "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "c"}}]}}),
        ),
    )
    .await
    .unwrap();
    pods.patch_status(
        "user",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Succeeded"}})),
    )
    .await
    .unwrap();
    pvcs.delete("c", &DeleteParams::default()).await.unwrap();
    // Changes that make the protection controller look again, then the claim is still held.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.create(
        &PostParams::default(),
        &obj(json!({"metadata": {"name": "nudge"}})),
    )
    .await
    .unwrap();
    sim.cluster.store().write(s3mover_k8s_sim::gc::pass);
    let held = pvcs.get("c").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    // A finished pod is deleted at once, and then the claim goes.
    pods.delete("user", &DeleteParams::default()).await.unwrap();
    await_condition(
        pvcs.clone(),
        "c",
        conditions::is_deleted(&pvc.metadata.uid.unwrap()),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn watcher_follows_changes_across_dropped_watches() {
    let sim = sim_api::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(sim.cluster.client(), "default");
    let cfg = watcher::Config::default().labels("w=1");
    let mut stream = watcher(cms.clone(), cfg).boxed();
    // The initial listing is complete once InitDone arrives.
    loop {
        if let watcher::Event::InitDone = stream.try_next().await.unwrap().unwrap() {
            break;
        }
    }
    let pp = PostParams::default();
    cms.create(
        &pp,
        &obj(json!({"metadata": {"name": "one", "labels": {"w": "1"}}})),
    )
    .await
    .unwrap();
    cms.create(&pp, &obj(json!({"metadata": {"name": "ignored"}})))
        .await
        .unwrap();
    let next_name = |e: watcher::Event<ConfigMap>| match e {
        watcher::Event::Apply(o) => Some(("apply", o.metadata.name.unwrap())),
        watcher::Event::Delete(o) => Some(("delete", o.metadata.name.unwrap())),
        _ => None,
    };
    let mut got = None;
    while got.is_none() {
        got = next_name(stream.try_next().await.unwrap().unwrap());
    }
    assert_eq!(got.unwrap(), ("apply", "one".to_string()));
    sim.cluster.drop_watches();
    cms.create(
        &pp,
        &obj(json!({"metadata": {"name": "two", "labels": {"w": "1"}}})),
    )
    .await
    .unwrap();
    cms.delete("one", &DeleteParams::default()).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        if let Some(e) = next_name(stream.try_next().await.unwrap().unwrap()) {
            if !seen.contains(&e) {
                seen.push(e);
            }
        }
    }
    assert!(seen.contains(&("apply", "two".to_string())), "{seen:?}");
    assert!(seen.contains(&("delete", "one".to_string())), "{seen:?}");
}

/// `limit` and `continue`: every page comes from the first page's moment, so an object deleted
/// between pages is still listed once; a spent or foreign token is refused.
#[tokio::test]
async fn lists_page_from_one_moment() {
    let sim = sim_api::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(sim.cluster.client(), "default");
    for i in 0..6 {
        cms.create(
            &PostParams::default(),
            &obj(json!({"metadata": {"name": format!("page-{i}"), "labels": {"paged": "yes"}}})),
        )
        .await
        .unwrap();
    }
    let selected = ListParams::default().labels("paged=yes");
    let first = cms.list(&selected.clone().limit(4)).await.unwrap();
    assert_eq!(first.items.len(), 4);
    let token = first.metadata.continue_.clone().expect("a continue token");
    assert_eq!(
        first.metadata.remaining_item_count, None,
        "not told under a selector"
    );
    cms.delete("page-5", &DeleteParams::default())
        .await
        .unwrap();
    let second = cms
        .list(&selected.clone().limit(4).continue_token(&token))
        .await
        .unwrap();
    let names: Vec<String> = first
        .items
        .iter()
        .chain(&second.items)
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    assert_eq!(
        names,
        (0..6).map(|i| format!("page-{i}")).collect::<Vec<_>>()
    );
    assert_eq!(second.metadata.continue_, None);
    assert_eq!(
        second.metadata.resource_version,
        first.metadata.resource_version
    );

    let spent = cms
        .list(&selected.clone().limit(4).continue_token(&token))
        .await
        .unwrap_err();
    assert_eq!(api_err(spent).code, 410);
    let all = cms.list(&ListParams::default().limit(2)).await.unwrap();
    assert!(
        all.metadata.remaining_item_count.is_some_and(|n| n >= 4),
        "{:?}",
        all.metadata
    );
    let foreign = cms
        .list(
            &selected
                .limit(2)
                .continue_token(all.metadata.continue_.as_deref().unwrap()),
        )
        .await
        .unwrap_err();
    assert_eq!(api_err(foreign).code, 400);
}

#[tokio::test]
async fn watch_from_a_compacted_version_gets_410() {
    let sim = sim_api::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(sim.cluster.client(), "default");
    let list = cms.list(&ListParams::default()).await.unwrap();
    let old_rv = list.metadata.resource_version.unwrap();
    cms.create(
        &PostParams::default(),
        &obj(json!({"metadata": {"name": "after"}})),
    )
    .await
    .unwrap();
    // Before compaction the change is replayed from the list's version.
    let mut w = cms
        .watch(&WatchParams::default(), &old_rv)
        .await
        .unwrap()
        .boxed();
    match w.try_next().await.unwrap().unwrap() {
        WatchEvent::Added(o) => assert_eq!(o.metadata.name.unwrap(), "after"),
        other => panic!("expected ADDED, got {other:?}"),
    }
    sim.cluster.compact();
    let mut w = cms
        .watch(&WatchParams::default(), &old_rv)
        .await
        .unwrap()
        .boxed();
    match w.try_next().await.unwrap().unwrap() {
        WatchEvent::Error(e) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
}

#[tokio::test]
async fn tokens_rbac_and_token_review() {
    let sim = sim_api::start().await;
    let admin = sim.cluster.client();
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), "default");
    sas.create(
        &PostParams::default(),
        &obj(json!({"metadata": {"name": "mover"}})),
    )
    .await
    .unwrap();
    // TokenRequest through the API, with an audience.
    let tr: serde_json::Value = admin
        .request(
            http::Request::post("/api/v1/namespaces/default/serviceaccounts/mover/token")
                .header("content-type", "application/json")
                .body(
                    serde_json::to_vec(
                        &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                    "spec": {"audiences": ["cbt-service"], "expirationSeconds": 3600}}),
                    )
                    .unwrap(),
                )
                .unwrap(),
        )
        .await
        .unwrap();
    let token = tr["status"]["token"].as_str().unwrap().to_string();
    assert_eq!(token.split('.').count(), 3);
    // TokenReview checks the audience.
    let reviews: Api<TokenReview> = Api::all(admin.clone());
    let review =
        |aud: &str| obj::<TokenReview>(json!({"spec": {"token": token, "audiences": [aud]}}));
    let ok = reviews
        .create(&PostParams::default(), &review("cbt-service"))
        .await
        .unwrap();
    let st = ok.status.unwrap();
    assert_eq!(st.authenticated, Some(true));
    assert_eq!(
        st.user.unwrap().username.as_deref(),
        Some("system:serviceaccount:default:mover")
    );
    let bad = reviews
        .create(&PostParams::default(), &review("other"))
        .await
        .unwrap();
    assert_eq!(bad.status.unwrap().authenticated, Some(false));
    assert_eq!(
        sim.cluster
            .review_token(&token, &["cbt-service"])
            .unwrap()
            .username,
        "system:serviceaccount:default:mover"
    );

    // A token for the API server, under RBAC: nothing allowed until bound.
    let api_token = sim
        .cluster
        .create_token(
            "default",
            "mover",
            &[],
            std::time::Duration::from_secs(3600),
        )
        .unwrap();
    let as_sa = sim.cluster.client_for_token(&api_token).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(as_sa.clone(), "default");
    let e = api_err(pods.list(&ListParams::default()).await.unwrap_err());
    assert_eq!(e.code, 403);
    assert_eq!(e.message, "pods is forbidden: User \"system:serviceaccount:default:mover\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\"");
    // The cbt-service token is not accepted by the API server itself.
    let wrong_aud = sim.cluster.client_for_token(&token).await.unwrap();
    let e = api_err(
        Api::<Pod>::namespaced(wrong_aud, "default")
            .list(&ListParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 401);
    let roles: Api<k8s_openapi::api::rbac::v1::Role> = Api::namespaced(admin.clone(), "default");
    roles.create(&PostParams::default(), &obj(json!({"metadata": {"name": "r"}, "rules": [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["repo"]}]}))).await.unwrap();
    let rbs: Api<k8s_openapi::api::rbac::v1::RoleBinding> =
        Api::namespaced(admin.clone(), "default");
    rbs.create(
        &PostParams::default(),
        &obj(json!({"metadata": {"name": "r"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
        "subjects": [{"kind": "ServiceAccount", "name": "mover", "namespace": "default"}]})),
    )
    .await
    .unwrap();
    pods.list(&ListParams::default()).await.unwrap();
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(as_sa.clone(), "default");
    let e = api_err(secrets.get("other").await.unwrap_err());
    assert_eq!(e.message, "secrets \"other\" is forbidden: User \"system:serviceaccount:default:mover\" cannot get resource \"secrets\" in API group \"\" in the namespace \"default\"");
    assert_eq!(
        api_err(secrets.get("repo").await.unwrap_err()).code,
        404,
        "allowed by name, then not found"
    );
    // Deleting the service account revokes its tokens.
    sas.delete("mover", &DeleteParams::default()).await.unwrap();
    assert_eq!(
        api_err(pods.list(&ListParams::default()).await.unwrap_err()).code,
        401
    );
}

#[tokio::test]
async fn injected_faults_fail_the_next_requests_only() {
    let sim = sim_api::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(sim.cluster.client(), "default");
    // A 500 is not retried by kube-rs: one armed fault, one failed call.
    sim.cluster.fail_next("/configmaps", 500, 1);
    let e = api_err(cms.list(&ListParams::default()).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (500, "InternalError"));
    cms.list(&ListParams::default()).await.unwrap();
    // 503 and 429 are retried by kube-rs' default policy: the call succeeds after them.
    sim.cluster.fail_next("/configmaps", 503, 1);
    sim.cluster.fail_next("/configmaps", 429, 1);
    cms.list(&ListParams::default()).await.unwrap();
    // Status 0: the connection is closed without an answer, a transport error.
    sim.cluster.fail_next("/configmaps", 0, 1);
    match cms.list(&ListParams::default()).await {
        Err(kube::Error::Api(s)) => panic!("expected a transport error, got an answer: {s:?}"),
        Err(_) => {}
        Ok(_) => panic!("expected a transport error"),
    }
    cms.list(&ListParams::default()).await.unwrap();
    // Both retried faults were used up by that one call's attempts.
    sim.cluster
        .fail_next("/namespaces/default/configmaps", 500, 1);
    assert_eq!(
        api_err(cms.list(&ListParams::default()).await.unwrap_err()).code,
        500
    );
    cms.list(&ListParams::default()).await.unwrap();
}
