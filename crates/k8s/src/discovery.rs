//! Finding the Changed Block Tracking service of a snapshot the way the upstream client does:
//! VolumeSnapshot → its VolumeSnapshotContent (handle, driver, source mode, size) → the
//! SnapshotMetadataService named after the driver → a TokenRequest for the caller's service
//! account with the service's audience.

use std::time::{Duration, SystemTime};

use k8s_openapi::api::authentication::v1::{SelfSubjectReview, TokenRequest};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use kube::Client;

use crate::resources::{self, ContentInfo, MetadataService, SnapshotStatus};
use crate::{Error, Result};

/// A ready snapshot's content.
pub async fn snapshot_content(
    client: &Client,
    namespace: &str,
    snapshot: &str,
) -> Result<ContentInfo> {
    let snapshots = resources::snapshots(client, namespace);
    let vs = crate::retry::read(
        || format!("cannot read VolumeSnapshot {namespace}/{snapshot}"),
        || snapshots.get(snapshot),
    )
    .await?;
    let status = SnapshotStatus::of(&vs);
    if !status.ready {
        return Err(Error::Invalid(format!(
            "VolumeSnapshot {namespace}/{snapshot} is not ready to use{}",
            status.error.map(|e| format!(": {e}")).unwrap_or_default()
        )));
    }
    let Some(content) = status.content else {
        return Err(Error::Invalid(format!(
            "VolumeSnapshot {namespace}/{snapshot} is not bound to a VolumeSnapshotContent"
        )));
    };
    let contents = resources::contents(client);
    let vsc = crate::retry::read(
        || format!("cannot read VolumeSnapshotContent {content}"),
        || contents.get(&content),
    )
    .await?;
    Ok(ContentInfo::of(&vsc))
}

/// The CSI handle of a ready snapshot (the base of a delta).
pub async fn snapshot_handle(client: &Client, namespace: &str, snapshot: &str) -> Result<String> {
    snapshot_content(client, namespace, snapshot)
        .await?
        .snapshot_handle
        .ok_or_else(|| {
            Error::Invalid(format!(
                "the content of VolumeSnapshot {namespace}/{snapshot} has no status.snapshotHandle"
            ))
        })
}

/// The driver's SnapshotMetadataService; `None` when the driver has none (no CBT).
pub async fn metadata_service(client: &Client, driver: &str) -> Result<Option<MetadataService>> {
    match resources::metadata_services(client).get(driver).await {
        Ok(object) => MetadataService::of(&object)
            .map(Some)
            .map_err(Error::Invalid),
        Err(e) if crate::error::not_found(&e) => Ok(None),
        Err(e) => Err(Error::api(
            format!("cannot read SnapshotMetadataService {driver}"),
            e,
        )),
    }
}

/// The service account the client runs as, from a SelfSubjectReview
/// (`system:serviceaccount:NS:NAME`).
pub async fn own_service_account(client: &Client) -> Result<(String, String)> {
    let review: SelfSubjectReview = serde_json::from_value(serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"
    }))
    .map_err(|e| Error::Invalid(e.to_string()))?;
    let answer = Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| Error::api("cannot ask who this client is (SelfSubjectReview)", e))?;
    let user = answer
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .unwrap_or_default();
    parse_service_account(&user).ok_or_else(|| {
        Error::Invalid(format!(
            "the client is {user:?}, not a service account; pass --service-account NS/NAME to request a token for one"
        ))
    })
}

/// Splits `system:serviceaccount:NS:NAME`.
pub fn parse_service_account(user: &str) -> Option<(String, String)> {
    let rest = user.strip_prefix("system:serviceaccount:")?;
    let (ns, name) = rest.split_once(':')?;
    (!ns.is_empty() && !name.is_empty()).then(|| (ns.to_string(), name.to_string()))
}

/// A token for service account `namespace/name` with `audience`, valid `seconds` (the API
/// server's minimum is 600). Returns the token and its expiry.
pub async fn request_token(
    client: &Client,
    namespace: &str,
    name: &str,
    audience: &str,
    seconds: i64,
) -> Result<(String, Option<SystemTime>)> {
    let request: TokenRequest = serde_json::from_value(serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"audiences": [audience], "expirationSeconds": seconds.max(600)}
    }))
    .map_err(|e| Error::Invalid(e.to_string()))?;
    let answer = Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .map_err(|e| {
            Error::api(
                format!("cannot get a token for service account {namespace}/{name} (TokenRequest)"),
                e,
            )
        })?;
    // Read through JSON: the optionality of these fields differs between Kubernetes versions
    // of the generated types.
    let status = serde_json::to_value(answer.status).unwrap_or_default();
    let token = status
        .get("token")
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Error::Failed("the TokenRequest came back without a token".into()))?
        .to_string();
    let expires = status
        .get("expirationTimestamp")
        .and_then(|t| t.as_str())
        .and_then(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        })
        .and_then(|t| {
            SystemTime::UNIX_EPOCH
                .checked_add(Duration::from_secs(u64::try_from(t.unix_timestamp()).ok()?))
        });
    Ok((token, expires))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_account_users() {
        assert_eq!(
            parse_service_account("system:serviceaccount:backup:mover"),
            Some(("backup".into(), "mover".into()))
        );
        assert_eq!(parse_service_account("kubernetes-admin"), None);
        assert_eq!(parse_service_account("system:serviceaccount::x"), None);
    }
}
