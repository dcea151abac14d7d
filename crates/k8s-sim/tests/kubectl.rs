//! The real `kubectl` against the simulated API server: get, list, apply (create, then
//! update), server-side dry runs and `kubectl diff`, watch, delete with each cascade, label selectors, and `auth can-i` and a
//! forbidden create for a service account under RBAC.

mod sim_api;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use sim_api::{kubectl_err, kubectl_ok, kubectl_or_skip};

const CM_V1: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  labels:
    app: demo
data:
  mode: one
"#;

const CM_V2: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  labels:
    app: demo
    tier: web
data:
  mode: two
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_get_list_and_delete() {
    let Some(k) = kubectl_or_skip("kubectl_apply_get_list_and_delete") else {
        return;
    };
    let sim = sim_api::start().await;
    let kc = sim.kubeconfig.clone();
    let dir = sim.dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        kubectl_ok(&k, &kc, &["create", "namespace", "apps"]);
        let f1 = dir.join("v1.yaml");
        std::fs::write(&f1, CM_V1).unwrap();
        let out = kubectl_ok(
            &k,
            &kc,
            &["apply", "-n", "apps", "-f", f1.to_str().unwrap()],
        );
        assert!(out.contains("configmap/settings created"), "{out}");
        let f2 = dir.join("v2.yaml");
        std::fs::write(&f2, CM_V2).unwrap();
        let out = kubectl_ok(
            &k,
            &kc,
            &["apply", "-n", "apps", "-f", f2.to_str().unwrap()],
        );
        assert!(out.contains("configmap/settings configured"), "{out}");
        let out = kubectl_ok(
            &k,
            &kc,
            &["apply", "-n", "apps", "-f", f2.to_str().unwrap()],
        );
        assert!(out.contains("configmap/settings unchanged"), "{out}");

        let json = kubectl_ok(
            &k,
            &kc,
            &["get", "configmap", "settings", "-n", "apps", "-o", "json"],
        );
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["data"]["mode"], "two");
        assert_eq!(v["metadata"]["labels"]["tier"], "web");

        // The default table: a header and the object's row.
        let table = kubectl_ok(&k, &kc, &["get", "cm", "-n", "apps"]);
        assert!(table.lines().next().unwrap().starts_with("NAME"), "{table}");
        assert!(table.lines().any(|l| l.starts_with("settings ")), "{table}");
        // All namespaces: kube-root-ca.crt of every namespace is listed.
        let all = kubectl_ok(&k, &kc, &["get", "configmaps", "-A", "-o", "name"]);
        assert!(
            all.matches("configmap/kube-root-ca.crt").count() >= 5,
            "{all}"
        );

        // kubectl asks for strict field validation: a misspelt field is refused.
        let bad = dir.join("bad.yaml");
        std::fs::write(&bad, CM_V2.replace("\ndata:", "\ndta:")).unwrap();
        let err = kubectl_err(
            &k,
            &kc,
            &["apply", "-n", "apps", "-f", bad.to_str().unwrap()],
        );
        assert!(
            err.contains("strict decoding error: unknown field \"dta\""),
            "{err}"
        );

        let out = kubectl_ok(&k, &kc, &["delete", "configmap", "settings", "-n", "apps"]);
        assert!(out.contains("deleted"), "{out}");
        let err = kubectl_err(&k, &kc, &["get", "configmap", "settings", "-n", "apps"]);
        assert!(err.contains("configmaps \"settings\" not found"), "{err}");
        let err = kubectl_err(&k, &kc, &["get", "configmap", "x", "-n", "nowhere-ns"]);
        assert!(err.contains("not found"), "{err}");
    })
    .await
    .unwrap();
}

/// `--dry-run=server` (the API's `dryRun=All`) answers as the write would and stores nothing;
/// `kubectl diff` compares against such a dry run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_server_dry_runs_change_nothing() {
    let Some(k) = kubectl_or_skip("kubectl_server_dry_runs_change_nothing") else {
        return;
    };
    let sim = sim_api::start().await;
    let kc = sim.kubeconfig.clone();
    let dir = sim.dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        kubectl_ok(&k, &kc, &["create", "namespace", "apps"]);
        let (f1, f2) = (dir.join("v1.yaml"), dir.join("v2.yaml"));
        std::fs::write(&f1, CM_V1).unwrap();
        std::fs::write(&f2, CM_V2).unwrap();
        let (f1, f2) = (f1.to_str().unwrap(), f2.to_str().unwrap());
        let out = kubectl_ok(
            &k,
            &kc,
            &["apply", "-n", "apps", "--dry-run=server", "-f", f1],
        );
        assert!(
            out.contains("configmap/settings created (server dry run)"),
            "{out}"
        );
        let err = kubectl_err(&k, &kc, &["get", "configmap", "settings", "-n", "apps"]);
        assert!(err.contains("not found"), "{err}");

        kubectl_ok(&k, &kc, &["apply", "-n", "apps", "-f", f1]);
        let diff = sim_api::kubectl(&k, &kc, &["diff", "-n", "apps", "-f", f2]);
        let shown = String::from_utf8_lossy(&diff.stdout);
        assert_eq!(diff.status.code(), Some(1), "differences found: {shown}");
        assert!(
            shown.contains("-  mode: one") && shown.contains("+  mode: two"),
            "{shown}"
        );
        let mode = |k: &std::path::Path| {
            kubectl_ok(
                k,
                &kc,
                &[
                    "get",
                    "cm",
                    "settings",
                    "-n",
                    "apps",
                    "-o",
                    "jsonpath={.data.mode}",
                ],
            )
        };
        assert_eq!(mode(&k), "one", "diff changed nothing");

        let out = kubectl_ok(
            &k,
            &kc,
            &["delete", "cm", "settings", "-n", "apps", "--dry-run=server"],
        );
        assert!(out.contains("deleted (server dry run)"), "{out}");
        assert_eq!(mode(&k), "one", "the dry-run delete kept it");
    })
    .await
    .unwrap();
}

/// kubectl reads long lists in chunks (`--chunk-size`, 500 by default) and follows the
/// continue tokens to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_reads_lists_in_chunks() {
    let Some(k) = kubectl_or_skip("kubectl_reads_lists_in_chunks") else {
        return;
    };
    let sim = sim_api::start().await;
    let kc = sim.kubeconfig.clone();
    tokio::task::spawn_blocking(move || {
        kubectl_ok(&k, &kc, &["create", "namespace", "many"]);
        for i in 0..7 {
            kubectl_ok(
                &k,
                &kc,
                &["create", "configmap", &format!("c{i}"), "-n", "many"],
            );
        }
        for format in ["name", "json"] {
            let out = kubectl_ok(
                &k,
                &kc,
                &["get", "cm", "-n", "many", "--chunk-size=3", "-o", format],
            );
            for i in 0..7 {
                assert!(out.contains(&format!("c{i}")), "{out}");
            }
            assert!(out.contains("kube-root-ca.crt"), "{out}");
        }
        let table = kubectl_ok(&k, &kc, &["get", "cm", "-n", "many", "--chunk-size=2"]);
        assert_eq!(table.lines().count(), 1 + 8, "{table}");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_label_selectors() {
    let Some(k) = kubectl_or_skip("kubectl_label_selectors") else {
        return;
    };
    let sim = sim_api::start().await;
    let kc = sim.kubeconfig.clone();
    tokio::task::spawn_blocking(move || {
        for (name, labels) in [
            ("a", "tier=db,env=prod"),
            ("b", "tier=web,env=prod"),
            ("c", "tier=db,env=dev,skip=yes"),
        ] {
            kubectl_ok(&k, &kc, &["create", "configmap", name]);
            let mut args = vec!["label", "configmap", name];
            args.extend(labels.split(','));
            kubectl_ok(&k, &kc, &args);
        }
        let names = |sel: &str| {
            let out = kubectl_ok(&k, &kc, &["get", "cm", "-l", sel, "-o", "name"]);
            let mut v: Vec<String> = out
                .lines()
                .map(|l| l.trim_start_matches("configmap/").to_string())
                .collect();
            v.sort();
            v
        };
        assert_eq!(names("tier=db"), ["a", "c"]);
        assert_eq!(names("tier!=db"), ["b", "kube-root-ca.crt"]);
        assert_eq!(names("tier in (db,web),!skip"), ["a", "b"]);
        assert_eq!(names("env notin (prod),tier"), ["c"]);
        assert_eq!(names("skip"), ["c"]);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_watch_sees_a_new_object() {
    let Some(k) = kubectl_or_skip("kubectl_get_watch_sees_a_new_object") else {
        return;
    };
    let sim = sim_api::start().await;
    let mut child = Command::new(&k)
        .arg("--kubeconfig")
        .arg(&sim.kubeconfig)
        .arg("--cache-dir")
        .arg(sim.kubeconfig.with_extension("cache"))
        .args(["get", "configmaps", "-w", "--output-watch-events"])
        .env_remove("KUBECONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The first line is the header, the second the initial listing of kube-root-ca.crt: the
    // list is done, and the watch continues from its resourceVersion.
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains("kube-root-ca.crt")) {
        seen.push(rx.recv().expect("kubectl printed the initial list"));
    }
    let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(sim.cluster.client(), "default");
    let cm: k8s_openapi::api::core::v1::ConfigMap =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "watched"}})).unwrap();
    api.create(&Default::default(), &cm).await.unwrap();
    // The event is queued on the watch before the watch is dropped, so kubectl prints it
    // and then exits when its watch ends.
    sim.cluster.drop_watches();
    let mut got = None;
    for line in rx.iter() {
        if line.contains("watched") {
            got = Some(line);
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    let line = got.expect("kubectl get -w printed the new configmap");
    assert!(line.contains("ADDED"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_delete_cascades() {
    let Some(k) = kubectl_or_skip("kubectl_delete_cascades") else {
        return;
    };
    let sim = sim_api::start().await;
    let client = sim.cluster.client();
    let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(client.clone(), "default");
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(client.clone(), "default");
    // Three owners, each with one dependent that blocks owner deletion.
    for owner in ["orphan-owner", "fg-owner", "bg-owner"] {
        let cm = serde_json::from_value(serde_json::json!({"metadata": {"name": owner}})).unwrap();
        let cm = cms.create(&Default::default(), &cm).await.unwrap();
        let uid = cm.metadata.uid.unwrap();
        let dep = serde_json::from_value(serde_json::json!({"metadata": {
            "name": format!("{owner}-dep"),
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": owner, "uid": uid, "blockOwnerDeletion": true}]
        }}))
        .unwrap();
        secrets.create(&Default::default(), &dep).await.unwrap();
    }
    let kc = sim.kubeconfig.clone();
    tokio::task::spawn_blocking(move || {
        kubectl_ok(
            &k,
            &kc,
            &["delete", "configmap", "orphan-owner", "--cascade=orphan"],
        );
        let dep = kubectl_ok(
            &k,
            &kc,
            &["get", "secret", "orphan-owner-dep", "-o", "json"],
        );
        let dep: serde_json::Value = serde_json::from_str(&dep).unwrap();
        assert!(dep["metadata"].get("ownerReferences").is_none(), "{dep}");

        // Foreground: kubectl waits until the owner is gone, which is after its dependent.
        kubectl_ok(
            &k,
            &kc,
            &["delete", "configmap", "fg-owner", "--cascade=foreground"],
        );
        let err = kubectl_err(&k, &kc, &["get", "secret", "fg-owner-dep"]);
        assert!(err.contains("not found"), "{err}");

        kubectl_ok(&k, &kc, &["delete", "configmap", "bg-owner"]);
        kubectl_ok(&k, &kc, &["wait", "--for=delete", "secret/bg-owner-dep"]);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_auth_can_i_for_a_service_account() {
    let Some(k) = kubectl_or_skip("kubectl_auth_can_i_for_a_service_account") else {
        return;
    };
    let sim = sim_api::start().await;
    let admin = sim.kubeconfig.clone();
    let dir = sim.dir.path().to_path_buf();
    let k2 = k.clone();
    tokio::task::spawn_blocking(move || {
        kubectl_ok(&k2, &admin, &["create", "namespace", "team"]);
        kubectl_ok(
            &k2,
            &admin,
            &["create", "serviceaccount", "reader", "-n", "team"],
        );
        kubectl_ok(
            &k2,
            &admin,
            &[
                "create",
                "role",
                "pod-reader",
                "-n",
                "team",
                "--verb=get,list,watch",
                "--resource=pods,pods/log",
            ],
        );
        kubectl_ok(
            &k2,
            &admin,
            &[
                "create",
                "rolebinding",
                "reader",
                "-n",
                "team",
                "--role=pod-reader",
                "--serviceaccount=team:reader",
            ],
        );
        let _ = dir;
    })
    .await
    .unwrap();
    let token = sim
        .cluster
        .create_token("team", "reader", &[], std::time::Duration::from_secs(3600))
        .unwrap();
    let sa_kc = sim.dir.path().join("sa-kubeconfig");
    sim.cluster
        .write_kubeconfig_for_token(&sa_kc, "team", &token)
        .unwrap();
    tokio::task::spawn_blocking(move || {
        let yes = kubectl_ok(&k, &sa_kc, &["auth", "can-i", "list", "pods"]);
        assert_eq!(yes.trim(), "yes");
        let yes = kubectl_ok(&k, &sa_kc, &["auth", "can-i", "get", "pods", "--subresource=log"]);
        assert_eq!(yes.trim(), "yes");
        let out = sim_api::kubectl(&k, &sa_kc, &["auth", "can-i", "create", "pods"]);
        assert!(!out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no");
        let out = sim_api::kubectl(&k, &sa_kc, &["auth", "can-i", "list", "pods", "-n", "default"]);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no");
        kubectl_ok(&k, &sa_kc, &["get", "pods"]);
        let err = kubectl_err(&k, &sa_kc, &["create", "configmap", "x"]);
        assert!(
            err.contains("configmaps is forbidden: User \"system:serviceaccount:team:reader\" cannot create resource \"configmaps\" in API group \"\" in the namespace \"team\""),
            "{err}"
        );
        let who = kubectl_ok(&k, &sa_kc, &["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"]);
        assert_eq!(who, "system:serviceaccount:team:reader");
    })
    .await
    .unwrap();
}

const SNAPSHOT: &str = r#"apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshotClass
metadata:
  name: csi-hostpath-snapclass
driver: hostpath.csi.k8s.io
deletionPolicy: Delete
---
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata:
  name: snap-1
spec:
  volumeSnapshotClassName: csi-hostpath-snapclass
  source:
    persistentVolumeClaimName: data
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_knows_the_snapshot_and_cbt_kinds_while_their_crds_exist() {
    let Some(k) =
        kubectl_or_skip("kubectl_knows_the_snapshot_and_cbt_kinds_while_their_crds_exist")
    else {
        return;
    };
    let sim = sim_api::start().await;
    let kc = sim.kubeconfig.clone();
    let dir = sim.dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let f = dir.join("snap.yaml");
        std::fs::write(&f, SNAPSHOT).unwrap();
        let out = kubectl_ok(
            &k,
            &kc,
            &["apply", "--server-side", "-f", f.to_str().unwrap()],
        );
        assert!(
            out.contains("volumesnapshot.snapshot.storage.k8s.io/snap-1 serverside-applied"),
            "{out}"
        );
        let out = kubectl_ok(&k, &kc, &["get", "vs", "-o", "name"]);
        assert_eq!(out.trim(), "volumesnapshot.snapshot.storage.k8s.io/snap-1");
        let out = kubectl_ok(
            &k,
            &kc,
            &["get", "vsclass", "-o", "jsonpath={.items[0].driver}"],
        );
        assert_eq!(out, "hostpath.csi.k8s.io");
        kubectl_ok(&k, &kc, &["get", "vsc"]);
        kubectl_ok(&k, &kc, &["get", "pvc", "-A"]);
        let crds = kubectl_ok(&k, &kc, &["get", "crd", "-o", "name"]);
        for want in [
            "volumesnapshots.snapshot.storage.k8s.io",
            "volumesnapshotcontents.snapshot.storage.k8s.io",
            "volumesnapshotclasses.snapshot.storage.k8s.io",
            "snapshotmetadataservices.cbt.storage.k8s.io",
        ] {
            assert!(crds.contains(want), "{want} missing from {crds}");
        }
        kubectl_ok(&k, &kc, &["get", "sms"]);
        kubectl_ok(
            &k,
            &kc,
            &[
                "delete",
                "crd",
                "snapshotmetadataservices.cbt.storage.k8s.io",
            ],
        );
        let err = kubectl_err(
            &k,
            &kc,
            &["get", "snapshotmetadataservices.cbt.storage.k8s.io"],
        );
        assert!(
            err.contains("the server doesn't have a resource type"),
            "{err}"
        );
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs_reads_what_the_kubelet_wrote() {
    let Some(k) = kubectl_or_skip("kubectl_logs_reads_what_the_kubelet_wrote") else {
        return;
    };
    let sim = sim_api::start().await;
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(sim.cluster.client(), "default");
    let pod = serde_json::from_value(serde_json::json!({"metadata": {"name": "mover"},
        "spec": {"containers": [{"name": "s3mover", "image": "s3mover"}]}}))
    .unwrap();
    pods.create(&Default::default(), &pod).await.unwrap();
    let kc = sim.kubeconfig.clone();
    let k2 = k.clone();
    let kc2 = kc.clone();
    let err = tokio::task::spawn_blocking(move || kubectl_err(&k2, &kc2, &["logs", "mover"]))
        .await
        .unwrap();
    assert!(err.contains("is waiting to start"), "{err}");
    let path = s3mover_k8s_sim::api::pod_log_path(
        &sim.cluster.options().state_dir,
        "default",
        "mover",
        "s3mover",
    );
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, "reading\nuploading\ndone\n").unwrap();
    tokio::task::spawn_blocking(move || {
        assert_eq!(
            kubectl_ok(&k, &kc, &["logs", "mover"]),
            "reading\nuploading\ndone\n"
        );
        assert_eq!(
            kubectl_ok(&k, &kc, &["logs", "mover", "--tail=1"]),
            "done\n"
        );
    })
    .await
    .unwrap();
}
