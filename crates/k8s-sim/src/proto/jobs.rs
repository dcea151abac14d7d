//! Wire schemas of `batch/v1` Job and the pod template inside it, for `kubectl create job`
//! (including `--from=cronjob/NAME`, how an operator runs a CronJob now), whose typed client
//! sends protobuf. Field numbers are those of Kubernetes' `core/v1` and `batch/v1`
//! `generated.proto`. Fields of kinds a backup tool's Jobs do not use (probes, affinity, most
//! volume sources, ...) are left out on purpose: a request that carries one fails with 415
//! naming it (send such a Job as JSON with `kubectl apply -f`), never silently loses it.

use super::{f, rep, Field, Ty, LABEL_SELECTOR, OBJECT_META};

/// `batch/v1` Job.
pub(super) const JOB: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(2, "spec", Ty::Msg(P_JOB_SPEC)),
    f(3, "status", Ty::Msg(P_JOB_STATUS)),
];

/// `PodTemplateSpec`
const P_POD_TEMPLATE_SPEC: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(2, "spec", Ty::Msg(P_POD_SPEC)),
];

/// `PodSpec` (not understood: ephemeralContainers, affinity, hostAliases, dnsConfig, readinessGates, topologySpreadConstraints, os, schedulingGates, resourceClaims, schedulingGroup, evictionResponders)
const P_POD_SPEC: &[Field] = &[
    rep(1, "volumes", Ty::Msg(P_VOLUME)),
    rep(20, "initContainers", Ty::Msg(P_CONTAINER)),
    rep(2, "containers", Ty::Msg(P_CONTAINER)),
    f(3, "restartPolicy", Ty::Str),
    f(4, "terminationGracePeriodSeconds", Ty::Int),
    f(5, "activeDeadlineSeconds", Ty::Int),
    f(6, "dnsPolicy", Ty::Str),
    f(7, "nodeSelector", Ty::MapStr),
    f(8, "serviceAccountName", Ty::Str),
    f(9, "serviceAccount", Ty::Str),
    f(21, "automountServiceAccountToken", Ty::Bool),
    f(10, "nodeName", Ty::Str),
    f(11, "hostNetwork", Ty::Bool),
    f(12, "hostPID", Ty::Bool),
    f(13, "hostIPC", Ty::Bool),
    f(27, "shareProcessNamespace", Ty::Bool),
    f(14, "securityContext", Ty::Msg(P_POD_SECURITY_CONTEXT)),
    rep(15, "imagePullSecrets", Ty::Msg(P_LOCAL_OBJECT_REFERENCE)),
    f(16, "hostname", Ty::Str),
    f(17, "subdomain", Ty::Str),
    f(19, "schedulerName", Ty::Str),
    rep(22, "tolerations", Ty::Msg(P_TOLERATION)),
    f(24, "priorityClassName", Ty::Str),
    f(25, "priority", Ty::Int),
    f(29, "runtimeClassName", Ty::Str),
    f(30, "enableServiceLinks", Ty::Bool),
    f(31, "preemptionPolicy", Ty::Str),
    f(32, "overhead", Ty::MapQuantity),
    f(35, "setHostnameAsFQDN", Ty::Bool),
    f(37, "hostUsers", Ty::Bool),
    f(40, "resources", Ty::Msg(P_RESOURCE_REQUIREMENTS)),
    f(41, "hostnameOverride", Ty::Str),
];

/// `Container` (not understood: resizePolicy, restartPolicyRules, livenessProbe, readinessProbe, startupProbe, lifecycle)
const P_CONTAINER: &[Field] = &[
    f(1, "name", Ty::Str),
    f(2, "image", Ty::Str),
    rep(3, "command", Ty::Str),
    rep(4, "args", Ty::Str),
    f(5, "workingDir", Ty::Str),
    rep(6, "ports", Ty::Msg(P_CONTAINER_PORT)),
    rep(19, "envFrom", Ty::Msg(P_ENV_FROM_SOURCE)),
    rep(7, "env", Ty::Msg(P_ENV_VAR)),
    f(8, "resources", Ty::Msg(P_RESOURCE_REQUIREMENTS)),
    f(24, "restartPolicy", Ty::Str),
    rep(9, "volumeMounts", Ty::Msg(P_VOLUME_MOUNT)),
    rep(21, "volumeDevices", Ty::Msg(P_VOLUME_DEVICE)),
    f(13, "terminationMessagePath", Ty::Str),
    f(20, "terminationMessagePolicy", Ty::Str),
    f(14, "imagePullPolicy", Ty::Str),
    f(15, "securityContext", Ty::Msg(P_SECURITY_CONTEXT)),
    f(16, "stdin", Ty::Bool),
    f(17, "stdinOnce", Ty::Bool),
    f(18, "tty", Ty::Bool),
];

/// `EnvVar`
const P_ENV_VAR: &[Field] = &[
    f(1, "name", Ty::Str),
    f(2, "value", Ty::Str),
    f(3, "valueFrom", Ty::Msg(P_ENV_VAR_SOURCE)),
];

/// `EnvVarSource` (not understood: fileKeyRef)
const P_ENV_VAR_SOURCE: &[Field] = &[
    f(1, "fieldRef", Ty::Msg(P_OBJECT_FIELD_SELECTOR)),
    f(2, "resourceFieldRef", Ty::Msg(P_RESOURCE_FIELD_SELECTOR)),
    f(3, "configMapKeyRef", Ty::Msg(P_CONFIG_MAP_KEY_SELECTOR)),
    f(4, "secretKeyRef", Ty::Msg(P_SECRET_KEY_SELECTOR)),
];

/// `SecretKeySelector`
const P_SECRET_KEY_SELECTOR: &[Field] = &[
    f(
        1,
        "localObjectReference",
        Ty::Inline(P_LOCAL_OBJECT_REFERENCE),
    ),
    f(2, "key", Ty::Str),
    f(3, "optional", Ty::Bool),
];

/// `ConfigMapKeySelector`
const P_CONFIG_MAP_KEY_SELECTOR: &[Field] = &[
    f(
        1,
        "localObjectReference",
        Ty::Inline(P_LOCAL_OBJECT_REFERENCE),
    ),
    f(2, "key", Ty::Str),
    f(3, "optional", Ty::Bool),
];

/// `ObjectFieldSelector`
const P_OBJECT_FIELD_SELECTOR: &[Field] =
    &[f(1, "apiVersion", Ty::Str), f(2, "fieldPath", Ty::Str)];

/// `ResourceFieldSelector`
const P_RESOURCE_FIELD_SELECTOR: &[Field] = &[
    f(1, "containerName", Ty::Str),
    f(2, "resource", Ty::Str),
    f(3, "divisor", Ty::Quantity),
];

/// `EnvFromSource`
const P_ENV_FROM_SOURCE: &[Field] = &[
    f(1, "prefix", Ty::Str),
    f(2, "configMapRef", Ty::Msg(P_CONFIG_MAP_ENV_SOURCE)),
    f(3, "secretRef", Ty::Msg(P_SECRET_ENV_SOURCE)),
];

/// `SecretEnvSource`
const P_SECRET_ENV_SOURCE: &[Field] = &[
    f(
        1,
        "localObjectReference",
        Ty::Inline(P_LOCAL_OBJECT_REFERENCE),
    ),
    f(2, "optional", Ty::Bool),
];

/// `ConfigMapEnvSource`
const P_CONFIG_MAP_ENV_SOURCE: &[Field] = &[
    f(
        1,
        "localObjectReference",
        Ty::Inline(P_LOCAL_OBJECT_REFERENCE),
    ),
    f(2, "optional", Ty::Bool),
];

/// `LocalObjectReference`
const P_LOCAL_OBJECT_REFERENCE: &[Field] = &[f(1, "name", Ty::Str)];

/// `ResourceRequirements`
const P_RESOURCE_REQUIREMENTS: &[Field] = &[
    f(1, "limits", Ty::MapQuantity),
    f(2, "requests", Ty::MapQuantity),
    rep(3, "claims", Ty::Msg(P_RESOURCE_CLAIM)),
];

/// `ResourceClaim`
const P_RESOURCE_CLAIM: &[Field] = &[f(1, "name", Ty::Str), f(2, "request", Ty::Str)];

/// `VolumeMount`
const P_VOLUME_MOUNT: &[Field] = &[
    f(1, "name", Ty::Str),
    f(2, "readOnly", Ty::Bool),
    f(7, "recursiveReadOnly", Ty::Str),
    f(3, "mountPath", Ty::Str),
    f(4, "subPath", Ty::Str),
    f(5, "mountPropagation", Ty::Str),
    f(6, "subPathExpr", Ty::Str),
    rep(8, "bindMountOptions", Ty::Str),
];

/// `VolumeDevice`
const P_VOLUME_DEVICE: &[Field] = &[f(1, "name", Ty::Str), f(2, "devicePath", Ty::Str)];

/// `SecurityContext` (not understood: seLinuxOptions, windowsOptions, appArmorProfile)
const P_SECURITY_CONTEXT: &[Field] = &[
    f(1, "capabilities", Ty::Msg(P_CAPABILITIES)),
    f(2, "privileged", Ty::Bool),
    f(4, "runAsUser", Ty::Int),
    f(8, "runAsGroup", Ty::Int),
    f(5, "runAsNonRoot", Ty::Bool),
    f(6, "readOnlyRootFilesystem", Ty::Bool),
    f(7, "allowPrivilegeEscalation", Ty::Bool),
    f(9, "procMount", Ty::Str),
    f(11, "seccompProfile", Ty::Msg(P_SECCOMP_PROFILE)),
];

/// `PodSecurityContext` (not understood: seLinuxOptions, windowsOptions, sysctls, appArmorProfile)
const P_POD_SECURITY_CONTEXT: &[Field] = &[
    f(2, "runAsUser", Ty::Int),
    f(6, "runAsGroup", Ty::Int),
    f(3, "runAsNonRoot", Ty::Bool),
    rep(4, "supplementalGroups", Ty::Int),
    f(12, "supplementalGroupsPolicy", Ty::Str),
    f(5, "fsGroup", Ty::Int),
    f(9, "fsGroupChangePolicy", Ty::Str),
    f(10, "seccompProfile", Ty::Msg(P_SECCOMP_PROFILE)),
    f(13, "seLinuxChangePolicy", Ty::Str),
];

/// `Capabilities`
const P_CAPABILITIES: &[Field] = &[rep(1, "add", Ty::Str), rep(2, "drop", Ty::Str)];

/// `SeccompProfile`
const P_SECCOMP_PROFILE: &[Field] = &[f(1, "type", Ty::Str), f(2, "localhostProfile", Ty::Str)];

/// `Volume`
const P_VOLUME: &[Field] = &[
    f(1, "name", Ty::Str),
    f(2, "volumeSource", Ty::Inline(P_VOLUME_SOURCE)),
];

/// `VolumeSource` (not understood: gcePersistentDisk, awsElasticBlockStore, gitRepo, nfs, iscsi, glusterfs, rbd, flexVolume, cinder, cephfs, flocker, fc, azureFile, vsphereVolume, quobyte, azureDisk, photonPersistentDisk, portworxVolume, scaleIO, storageos, csi, ephemeral, image)
const P_VOLUME_SOURCE: &[Field] = &[
    f(1, "hostPath", Ty::Msg(P_HOST_PATH_VOLUME_SOURCE)),
    f(2, "emptyDir", Ty::Msg(P_EMPTY_DIR_VOLUME_SOURCE)),
    f(6, "secret", Ty::Msg(P_SECRET_VOLUME_SOURCE)),
    f(
        10,
        "persistentVolumeClaim",
        Ty::Msg(P_PERSISTENT_VOLUME_CLAIM_VOLUME_SOURCE),
    ),
    f(16, "downwardAPI", Ty::Msg(P_DOWNWARD_A_P_I_VOLUME_SOURCE)),
    f(19, "configMap", Ty::Msg(P_CONFIG_MAP_VOLUME_SOURCE)),
    f(26, "projected", Ty::Msg(P_PROJECTED_VOLUME_SOURCE)),
];

/// `EmptyDirVolumeSource`
const P_EMPTY_DIR_VOLUME_SOURCE: &[Field] = &[
    f(1, "medium", Ty::Str),
    f(2, "sizeLimit", Ty::Quantity),
    f(3, "mode", Ty::Int),
];

/// `SecretVolumeSource`
const P_SECRET_VOLUME_SOURCE: &[Field] = &[
    f(1, "secretName", Ty::Str),
    rep(2, "items", Ty::Msg(P_KEY_TO_PATH)),
    f(3, "defaultMode", Ty::Int),
    f(4, "optional", Ty::Bool),
    f(5, "defaultUser", Ty::Int),
];

/// `ConfigMapVolumeSource`
const P_CONFIG_MAP_VOLUME_SOURCE: &[Field] = &[
    f(
        1,
        "localObjectReference",
        Ty::Inline(P_LOCAL_OBJECT_REFERENCE),
    ),
    rep(2, "items", Ty::Msg(P_KEY_TO_PATH)),
    f(3, "defaultMode", Ty::Int),
    f(4, "optional", Ty::Bool),
    f(5, "defaultUser", Ty::Int),
];

/// `KeyToPath`
const P_KEY_TO_PATH: &[Field] = &[
    f(1, "key", Ty::Str),
    f(2, "path", Ty::Str),
    f(3, "mode", Ty::Int),
    f(4, "user", Ty::Int),
];

/// `ProjectedVolumeSource`
const P_PROJECTED_VOLUME_SOURCE: &[Field] = &[
    rep(1, "sources", Ty::Msg(P_VOLUME_PROJECTION)),
    f(2, "defaultMode", Ty::Int),
    f(3, "defaultUser", Ty::Int),
];

/// `VolumeProjection` (not understood: clusterTrustBundle, podCertificate)
const P_VOLUME_PROJECTION: &[Field] = &[
    f(1, "secret", Ty::Msg(P_SECRET_PROJECTION)),
    f(2, "downwardAPI", Ty::Msg(P_DOWNWARD_A_P_I_PROJECTION)),
    f(3, "configMap", Ty::Msg(P_CONFIG_MAP_PROJECTION)),
    f(
        4,
        "serviceAccountToken",
        Ty::Msg(P_SERVICE_ACCOUNT_TOKEN_PROJECTION),
    ),
];

/// `ServiceAccountTokenProjection`
const P_SERVICE_ACCOUNT_TOKEN_PROJECTION: &[Field] = &[
    f(1, "audience", Ty::Str),
    f(2, "expirationSeconds", Ty::Int),
    f(3, "path", Ty::Str),
    f(4, "user", Ty::Int),
];

/// `SecretProjection`
const P_SECRET_PROJECTION: &[Field] = &[
    f(
        1,
        "localObjectReference",
        Ty::Inline(P_LOCAL_OBJECT_REFERENCE),
    ),
    rep(2, "items", Ty::Msg(P_KEY_TO_PATH)),
    f(4, "optional", Ty::Bool),
];

/// `ConfigMapProjection`
const P_CONFIG_MAP_PROJECTION: &[Field] = &[
    f(
        1,
        "localObjectReference",
        Ty::Inline(P_LOCAL_OBJECT_REFERENCE),
    ),
    rep(2, "items", Ty::Msg(P_KEY_TO_PATH)),
    f(4, "optional", Ty::Bool),
];

/// `DownwardAPIProjection`
const P_DOWNWARD_A_P_I_PROJECTION: &[Field] =
    &[rep(1, "items", Ty::Msg(P_DOWNWARD_A_P_I_VOLUME_FILE))];

/// `DownwardAPIVolumeSource`
const P_DOWNWARD_A_P_I_VOLUME_SOURCE: &[Field] = &[
    rep(1, "items", Ty::Msg(P_DOWNWARD_A_P_I_VOLUME_FILE)),
    f(2, "defaultMode", Ty::Int),
    f(3, "defaultUser", Ty::Int),
];

/// `DownwardAPIVolumeFile`
const P_DOWNWARD_A_P_I_VOLUME_FILE: &[Field] = &[
    f(1, "path", Ty::Str),
    f(2, "fieldRef", Ty::Msg(P_OBJECT_FIELD_SELECTOR)),
    f(3, "resourceFieldRef", Ty::Msg(P_RESOURCE_FIELD_SELECTOR)),
    f(4, "mode", Ty::Int),
    f(5, "user", Ty::Int),
];

/// `PersistentVolumeClaimVolumeSource`
const P_PERSISTENT_VOLUME_CLAIM_VOLUME_SOURCE: &[Field] =
    &[f(1, "claimName", Ty::Str), f(2, "readOnly", Ty::Bool)];

/// `Toleration`
const P_TOLERATION: &[Field] = &[
    f(1, "key", Ty::Str),
    f(2, "operator", Ty::Str),
    f(3, "value", Ty::Str),
    f(4, "effect", Ty::Str),
    f(5, "tolerationSeconds", Ty::Int),
];

/// `ContainerPort`
const P_CONTAINER_PORT: &[Field] = &[
    f(1, "name", Ty::Str),
    f(2, "hostPort", Ty::Int),
    f(3, "containerPort", Ty::Int),
    f(4, "protocol", Ty::Str),
    f(5, "hostIP", Ty::Str),
];

/// `HostPathVolumeSource`
const P_HOST_PATH_VOLUME_SOURCE: &[Field] = &[f(1, "path", Ty::Str), f(2, "type", Ty::Str)];

/// `batch/v1 JobSpec` (not understood: podFailurePolicy, successPolicy, scheduling)
const P_JOB_SPEC: &[Field] = &[
    f(1, "parallelism", Ty::Int),
    f(2, "completions", Ty::Int),
    f(3, "activeDeadlineSeconds", Ty::Int),
    f(7, "backoffLimit", Ty::Int),
    f(12, "backoffLimitPerIndex", Ty::Int),
    f(13, "maxFailedIndexes", Ty::Int),
    f(4, "selector", Ty::Msg(LABEL_SELECTOR)),
    f(5, "manualSelector", Ty::Bool),
    f(6, "template", Ty::Msg(P_POD_TEMPLATE_SPEC)),
    f(8, "ttlSecondsAfterFinished", Ty::Int),
    f(9, "completionMode", Ty::Str),
    f(10, "suspend", Ty::Bool),
    f(14, "podReplacementPolicy", Ty::Str),
    f(15, "managedBy", Ty::Str),
];

/// `batch/v1 JobStatus`
const P_JOB_STATUS: &[Field] = &[
    rep(1, "conditions", Ty::Msg(P_JOB_CONDITION)),
    f(2, "startTime", Ty::Time),
    f(3, "completionTime", Ty::Time),
    f(4, "active", Ty::Int),
    f(5, "succeeded", Ty::Int),
    f(6, "failed", Ty::Int),
    f(11, "terminating", Ty::Int),
    f(7, "completedIndexes", Ty::Str),
    f(10, "failedIndexes", Ty::Str),
    f(
        8,
        "uncountedTerminatedPods",
        Ty::Msg(P_UNCOUNTED_TERMINATED_PODS),
    ),
    f(9, "ready", Ty::Int),
];

/// `batch/v1 JobCondition`
const P_JOB_CONDITION: &[Field] = &[
    f(1, "type", Ty::Str),
    f(2, "status", Ty::Str),
    f(3, "lastProbeTime", Ty::Time),
    f(4, "lastTransitionTime", Ty::Time),
    f(5, "reason", Ty::Str),
    f(6, "message", Ty::Str),
];

/// `batch/v1 UncountedTerminatedPods`
const P_UNCOUNTED_TERMINATED_PODS: &[Field] =
    &[rep(1, "succeeded", Ty::Str), rep(2, "failed", Ty::Str)];

#[cfg(test)]
mod tests {
    use serde_json::json;

    /// A length-delimited field (tags above 15 take two bytes).
    fn ld(num: u64, body: &[u8]) -> Vec<u8> {
        let tag = (num << 3) | 2;
        let mut v = if tag < 0x80 {
            vec![u8::try_from(tag).unwrap()]
        } else {
            vec![
                u8::try_from(tag & 0x7f | 0x80).unwrap(),
                u8::try_from(tag >> 7).unwrap(),
            ]
        };
        v.push(u8::try_from(body.len()).unwrap());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn decodes_a_job_from_a_cronjob_template() {
        let limits = ld(1, &[ld(1, b"memory"), ld(2, &ld(1, b"256Mi"))].concat());
        let container = [
            ld(1, b"verify"),
            ld(2, b"s3mover:1"),
            ld(4, b"verify"),
            ld(4, b""),
            ld(5, b""),
            ld(8, &limits),
            ld(19, &ld(3, &ld(1, &ld(1, b"repo")))),
        ]
        .concat();
        let volume = [ld(1, b"tmp"), ld(2, &ld(2, b""))].concat();
        let pod_spec = [ld(1, &volume), ld(2, &container), ld(3, b"Never")].concat();
        let template = ld(2, &pod_spec);
        let spec = ld(6, &template);
        let raw = [ld(1, &ld(1, b"now")), ld(2, &spec), ld(3, b"")].concat();
        let tm = [ld(1, b"batch/v1"), ld(2, b"Job")].concat();
        let body = [b"k8s\0".to_vec(), ld(1, &tm), ld(2, &raw)].concat();
        let v = super::super::decode(&body).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "now"},
                "status": {},
                "spec": {"template": {"spec": {"restartPolicy": "Never",
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                    "containers": [{
                    "name": "verify", "image": "s3mover:1", "args": ["verify", ""],
                    "envFrom": [{"secretRef": {"name": "repo"}}],
                    "resources": {"limits": {"memory": "256Mi"}}}]}}}})
        );
        // A probe is not understood: refused, naming it.
        let probe = [container.clone(), ld(10, b"")].concat();
        let raw = [ld(2, &ld(6, &ld(2, &ld(2, &probe))))].concat();
        let body = [b"k8s\0".to_vec(), ld(1, &tm), ld(2, &raw)].concat();
        let e = super::super::decode(&body).unwrap_err();
        assert!(
            e.contains("field 10 of Job.spec.template.spec.containers"),
            "{e}"
        );
    }
}
