//! s3mover's container image on the simulated cluster: `scripts/build-image.sh` builds it FROM
//! scratch with buildah, the kubelet pulls it the way a node does (the OCI archive unpacked with
//! umoci) and runs the mover pods with the image's own root filesystem as `/`, so nothing of
//! the host is there but what the pod mounts. `k8s backup` and `k8s restore` of a Block claim
//! to Garage behind HTTPS are byte-exact; copies of the image without its CA bundle or without
//! libc fail.
//!
//! The image packages the binary this test run built (`CARGO_BIN_EXE_s3mover`, the debug
//! profile): CI builds it anyway, and a release build would add minutes. The release image's
//! size is measured by running the script itself (docs/benchmarks-k8s.md).
//!
//! `skopeo copy` takes the archive as a registry client would.
//!
//! Needs root, bubblewrap, losetup, kubectl, buildah, umoci, skopeo and garage: `SKIPPED`
//! outside CI without them, a failure in CI.

mod k8s_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_support::{pattern, require, start, write_at, IMAGE, PASSWORD};
use s3mover_k8s_sim::controllers::oci;
use s3mover_testkit::garage::garage_or_skip;
use s3mover_testkit::proxy::{FaultProxy, Faults};

const MIB: u64 = 1 << 20;

/// The image tools, besides what every cluster test needs.
fn require_image_tools(test: &str) -> bool {
    require_tools(test, &["buildah", "umoci"])
}

/// `SKIPPED` outside CI, a failure in CI, when one of `tools` is not on PATH.
fn require_tools(test: &str, tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| {
            !std::env::var_os("PATH")
                .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(t).is_file()))
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    let reason = format!("needs {}", missing.join(", "));
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: {reason} (CI must provide it: see .ci/run)");
    }
    println!("SKIPPED {test}: {reason}");
    false
}

/// Runs scripts/build-image.sh for the test's binary with `ca_bundle` as the image's CA bundle.
fn build_image(out: &Path, ca_bundle: &Path) {
    let script = k8s_support::repo_root().join("scripts/build-image.sh");
    let result = Command::new("bash")
        .arg(&script)
        .arg(out)
        .env("S3MOVER_BIN", env!("CARGO_BIN_EXE_s3mover"))
        .env("S3MOVER_CA_BUNDLE", ca_bundle)
        .env("S3MOVER_IMAGE_REF", "s3mover:test")
        .output()
        .expect("bash runs");
    assert!(
        result.status.success(),
        "build-image.sh failed: {}",
        String::from_utf8_lossy(&result.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_image_runs_backup_and_restore_as_mover_pods() {
    let test = "the_image_runs_backup_and_restore_as_mover_pods";
    if !require(test) || !require_image_tools(test) {
        return;
    }
    let Some(garage) = garage_or_skip(test) else {
        return;
    };
    let https = FaultProxy::start_tls(&garage.endpoint(), Faults::none()).expect("TLS proxy");
    let work = tempfile::tempdir().expect("temporary directory");

    // The image's CA bundle: the system's roots and the test CA the HTTPS endpoint's
    // certificate is signed by, as a cluster's private CA would be added.
    let ca_pem = https.ca_pem().expect("the proxy's CA");
    let test_ca = work.path().join("test-ca.pem");
    std::fs::write(&test_ca, ca_pem).expect("write CA");
    let system = std::fs::read("/etc/ssl/certs/ca-certificates.crt").unwrap_or_default();
    let bundle = work.path().join("bundle.pem");
    std::fs::write(&bundle, [system, ca_pem.as_bytes().to_vec()].concat()).expect("bundle");
    let archive = work.path().join("s3mover-image.tar");
    build_image(&archive, &bundle);

    let image = oci::unpack_archive(&archive, &work.path().join("pulled")).expect("unpack");
    assert_eq!(image.entrypoint, vec!["/usr/local/bin/s3mover".to_string()]);
    let rootfs: PathBuf = image.rootfs.clone().expect("a root filesystem");
    assert!(rootfs.join("etc/ssl/certs/ca-certificates.crt").is_file());
    // Broken copies: no CA bundle, no libc.
    let no_ca = broken_copy(
        &image,
        "etc/ssl/certs/ca-certificates.crt",
        work.path(),
        "no-ca",
    );
    let no_libc = broken_copy(&image, &find_libc(&image), work.path(), "no-libc");

    let k8s = start(|c| {
        c.images.insert(IMAGE.into(), image.clone());
        c.images.insert("s3mover:no-ca".into(), no_ca);
        c.images.insert("s3mover:no-libc".into(), no_libc);
    })
    .await;
    // The repository is in Garage, reached over HTTPS; the orchestrator (this host) trusts
    // the test CA through S3MOVER_CA_CERT and SSL_CERT_FILE, the mover pods only through the
    // image's bundle.
    let repo = format!("s3://{}/cluster", garage.bucket());
    let mut env = garage.env_for_endpoint(&https.endpoint());
    let init = Command::new(env!("CARGO_BIN_EXE_s3mover"))
        .args(["init", "--kdf-memory", "8M", "--kdf-passes", "1"])
        .env("S3MOVER_REPO", &repo)
        .env("S3MOVER_PASSWORD", PASSWORD)
        .env("S3MOVER_CA_CERT", &test_ca)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("s3mover init");
    assert!(
        init.status.success(),
        "init: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    k8s.kubectl(&["create", "namespace", "db"], None);
    let mover = std::fs::read_to_string(k8s_support::repo_root().join("deploy/rbac/mover.yaml"))
        .expect("deploy/rbac/mover.yaml")
        .replace("namespace: default", "namespace: db");
    k8s.kubectl(&["apply", "-f", "-"], Some(&mover));
    env.push(("S3MOVER_REPO".into(), repo));
    env.push(("S3MOVER_PASSWORD".into(), PASSWORD.into()));
    let literals: Vec<String> = env
        .iter()
        .map(|(k, v)| format!("--from-literal={k}={v}"))
        .collect();
    let mut args = vec!["create", "secret", "generic", "s3mover-repo", "-n", "db"];
    args.extend(literals.iter().map(String::as_str));
    k8s.kubectl(&args, None);

    k8s.claim("db", "data", 8 * MIB, "Block", &[]).await;
    let volume = k8s.image_of("db", "data").await;
    write_at(&volume, 0, &pattern(21, 2 * MIB as usize));
    write_at(&volume, 5 * MIB, &pattern(22, MIB as usize));
    let expected = std::fs::read(&volume).expect("volume");

    let run = |args: &[&str]| {
        // `k8s restore` opens the repository with the Secret's settings only: the host's
        // trust store has to know the test CA.
        let out = k8s
            .s3mover_command(args)
            .env("S3MOVER_CA_CERT", &test_ca)
            .env("SSL_CERT_FILE", &bundle)
            .output()
            .expect("s3mover runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // Images that lack what the program needs fail, with the reason.
    for (broken, says) in [
        ("s3mover:no-ca", "certificate"),
        ("s3mover:no-libc", "exit code 127"),
    ] {
        let (code, stdout, stderr) = run(&[
            "k8s",
            "backup",
            "data",
            "-n",
            "db",
            "--mover-image",
            broken,
            "--backoff-limit",
            "0",
            "-o",
            "json",
        ]);
        assert_ne!(code, 0, "{broken}: {stdout}");
        assert!(
            stderr.to_lowercase().contains(says) || stdout.to_lowercase().contains(says),
            "{broken} should fail saying {says:?}: {stderr}\n{stdout}"
        );
    }

    let (code, stdout, stderr) = run(&["k8s", "backup", "data", "-n", "db", "-o", "json"]);
    assert_eq!(code, 0, "backup: {stderr}\n{stdout}");
    let backup: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(backup[0]["status"], "ok", "{backup}");
    assert_eq!(backup[0]["changeSource"], "cbt-allocated", "{backup}");

    k8s.kubectl(&["delete", "pvc", "data", "-n", "db", "--wait=true"], None);
    let (code, stdout, stderr) = run(&["k8s", "restore", "data", "-n", "db", "-o", "json"]);
    assert_eq!(code, 0, "restore: {stderr}\n{stdout}");
    let restored: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(restored["backup"], backup[0]["id"], "{restored}");
    k8s.wait_bound("db", "data").await;
    let got = std::fs::read(k8s.image_of("db", "data").await).expect("restored volume");
    assert!(
        got == expected,
        "the restored volume differs from the backed-up one"
    );
    k8s.assert_no_leftovers().await;
}

/// Without S3: the image runs `s3mover --version` as a pod, with nothing of the host but
/// what the pod mounts; the same image without libc cannot start its program.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_image_runs_in_its_own_root_filesystem() {
    let test = "the_image_runs_in_its_own_root_filesystem";
    if !require(test) || !require_image_tools(test) {
        return;
    }
    let work = tempfile::tempdir().expect("temporary directory");
    let archive = work.path().join("s3mover-image.tar");
    build_image(&archive, Path::new("/etc/ssl/certs/ca-certificates.crt"));
    let image = oci::unpack_archive(&archive, &work.path().join("pulled")).expect("unpack");
    let libc = find_libc(&image);
    let no_libc = broken_copy(&image, &libc, work.path(), "no-libc");
    let k8s = start(|c| {
        c.images.insert(IMAGE.into(), image.clone());
        c.images.insert("s3mover:no-libc".into(), no_libc);
    })
    .await;
    k8s.kubectl(&["create", "namespace", "app"], None);
    // `host` names the repository start() made on the host: there, `backups` would list it.
    let host_env = serde_json::json!([
        {"name": "S3MOVER_REPO", "value": k8s.repo.display().to_string()},
        {"name": "S3MOVER_PASSWORD", "value": PASSWORD},
    ]);
    for (name, image, args, env) in [
        ("version", IMAGE, vec!["--version"], serde_json::json!([])),
        ("host", IMAGE, vec!["backups"], host_env),
        (
            "no-libc",
            "s3mover:no-libc",
            vec!["--version"],
            serde_json::json!([]),
        ),
    ] {
        let pod = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "app"},
            "spec": {"restartPolicy": "Never", "containers": [
                {"name": "c", "image": image, "args": args, "env": env}]}
        });
        k8s.kubectl(&["apply", "-f", "-"], Some(&pod.to_string()));
    }
    let phase = |name: &str| {
        let out = k8s.kubectl(
            &[
                "get",
                "pod",
                name,
                "-n",
                "app",
                "-o",
                "jsonpath={.status.phase}",
            ],
            None,
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let log = |name: &str| {
        let out = k8s.kubectl(&["logs", name, "-n", "app"], None);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let start_wait = std::time::Instant::now();
    while ["version", "host", "no-libc"]
        .iter()
        .any(|p| !matches!(phase(p).as_str(), "Succeeded" | "Failed"))
    {
        assert!(
            start_wait.elapsed() < k8s_support::PATIENCE,
            "pods never finished"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(phase("version"), "Succeeded", "{}", log("version"));
    assert!(log("version").starts_with("s3mover "), "{}", log("version"));
    // The host's files are not the container's: the repository is not there.
    assert_eq!(phase("host"), "Failed", "{}", log("host"));
    assert_eq!(phase("no-libc"), "Failed");
    assert!(log("no-libc").contains("libc.so.6"), "{}", log("no-libc"));
}

/// The path of `libc.so.6` inside an unpacked image.
fn find_libc(image: &s3mover_k8s_sim::controllers::ImageConfig) -> String {
    let rootfs = image.rootfs.as_ref().expect("a root filesystem");
    [
        "lib/x86_64-linux-gnu",
        "usr/lib/x86_64-linux-gnu",
        "lib64",
        "lib",
    ]
    .iter()
    .map(|d| Path::new(d).join("libc.so.6"))
    .find(|p| rootfs.join(p).is_file())
    .expect("libc.so.6 in the image")
    .display()
    .to_string()
}

/// A copy of `image`'s root filesystem without `remove` (a path relative to it), as another
/// image.
fn broken_copy(
    image: &s3mover_k8s_sim::controllers::ImageConfig,
    remove: &str,
    dir: &Path,
    name: &str,
) -> s3mover_k8s_sim::controllers::ImageConfig {
    let from = image.rootfs.as_ref().expect("a root filesystem");
    let to = dir.join(name);
    let ok = Command::new("cp")
        .args(["-a", "--reflink=auto"])
        .arg(from)
        .arg(&to)
        .status()
        .expect("cp");
    assert!(ok.success());
    std::fs::remove_file(to.join(remove)).expect("remove from the copy");
    let mut broken = image.clone();
    broken.rootfs = Some(to);
    broken
}

/// A registry client takes the archive as it is: `skopeo copy oci-archive:… oci:…` (what a
/// user runs with `docker://REGISTRY/…` as the destination) copies the image, and the copy's
/// manifest names a configuration and layers that are all there, each with the digest it is
/// stored under.
#[test]
fn skopeo_copies_the_archive() {
    let test = "skopeo_copies_the_archive";
    if !require_tools(test, &["buildah", "skopeo"]) {
        return;
    }
    let work = tempfile::tempdir().expect("temporary directory");
    let archive = work.path().join("s3mover-image.tar");
    build_image(&archive, Path::new("/etc/ssl/certs/ca-certificates.crt"));
    let layout = work.path().join("layout");
    let out = Command::new("skopeo")
        .arg("copy")
        .arg(format!("oci-archive:{}", archive.display()))
        .arg(format!("oci:{}:s3mover:copied", layout.display()))
        .output()
        .expect("skopeo runs");
    assert!(
        out.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = |path: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(path).expect("read")).expect("JSON")
    };
    let blob = |digest: &str| {
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        layout.join("blobs/sha256").join(hex)
    };
    let index = json(&layout.join("index.json"));
    let manifests = index["manifests"].as_array().expect("manifests");
    assert_eq!(manifests.len(), 1, "{index}");
    assert_eq!(
        manifests[0]["annotations"]["org.opencontainers.image.ref.name"],
        "s3mover:copied"
    );
    let manifest = json(&blob(manifests[0]["digest"].as_str().expect("digest")));
    let layers = manifest["layers"].as_array().expect("layers");
    assert!(!layers.is_empty(), "{manifest}");
    let mut digests = vec![manifest["config"]["digest"]
        .as_str()
        .expect("config digest")];
    digests.extend(
        layers
            .iter()
            .map(|l| l["digest"].as_str().expect("layer digest")),
    );
    for digest in digests {
        let path = blob(digest);
        let sum = Command::new("sha256sum")
            .arg(&path)
            .output()
            .expect("sha256sum");
        let got = String::from_utf8_lossy(&sum.stdout);
        assert_eq!(
            got.split_whitespace().next(),
            digest.strip_prefix("sha256:"),
            "{} is not what its digest says",
            path.display()
        );
    }
    let config = json(&blob(
        manifest["config"]["digest"].as_str().expect("digest"),
    ));
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/usr/local/bin/s3mover"])
    );
}

/// Bad input to the build script is one line saying what is wrong, before anything is built.
#[test]
fn build_image_refuses_a_missing_binary_in_one_line() {
    let work = tempfile::tempdir().expect("temporary directory");
    let out = Command::new("bash")
        .arg(k8s_support::repo_root().join("scripts/build-image.sh"))
        .arg(work.path().join("image.tar"))
        .env("S3MOVER_BIN", work.path().join("no-such-binary"))
        .output()
        .expect("bash runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("build-image.sh: "), "{stderr}");
    assert!(
        stderr.contains("no-such-binary is not an executable file") || stderr.contains("needs "),
        "{stderr}"
    );
    assert!(!work.path().join("image.tar").exists());
}
