//! Which claims a command works on: names in one namespace, or a label selector in one
//! namespace or all of them (kubectl's `-n`, `-l`, `-A`).

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, ListParams};
use kube::Client;

use crate::{Error, Result};

/// A claim by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClaimRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl std::fmt::Display for ClaimRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What the user selected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Named claims in one namespace.
    Names {
        /// The namespace.
        namespace: String,
        /// The claims.
        names: Vec<String>,
    },
    /// A label selector in one namespace (`Some`) or all (`None`).
    Labels {
        /// The namespace, or all.
        namespace: Option<String>,
        /// The selector, as kubectl takes it.
        selector: String,
    },
}

impl Selection {
    /// Checks the flag combination: names or `-l`, not both, not neither; `-A` only with `-l`.
    pub fn from_flags(
        names: &[String],
        selector: Option<&str>,
        namespace: &str,
        all_namespaces: bool,
    ) -> Result<Selection> {
        match (names.is_empty(), selector) {
            (false, Some(_)) => Err(Error::Invalid(
                "name claims or select them with -l, not both".into(),
            )),
            (true, None) => Err(Error::Invalid(
                "name the claims to back up, or select them with -l SELECTOR (with -A for every namespace)".into(),
            )),
            (false, None) if all_namespaces => Err(Error::Invalid(
                "-A selects by label across namespaces: use -l SELECTOR with it, or name claims with -n NAMESPACE".into(),
            )),
            (false, None) => Ok(Selection::Names {
                namespace: namespace.to_string(),
                names: names.to_vec(),
            }),
            (true, Some(selector)) => Ok(Selection::Labels {
                namespace: (!all_namespaces).then(|| namespace.to_string()),
                selector: selector.to_string(),
            }),
        }
    }

    /// The selected claims, sorted; named claims are returned as named (a missing one fails
    /// later, on its own).
    pub async fn resolve(&self, client: &Client) -> Result<Vec<ClaimRef>> {
        match self {
            Selection::Names { namespace, names } => {
                let mut seen = std::collections::BTreeSet::new();
                Ok(names
                    .iter()
                    .filter(|n| seen.insert(n.as_str()))
                    .map(|name| ClaimRef {
                        namespace: namespace.clone(),
                        name: name.clone(),
                    })
                    .collect())
            }
            Selection::Labels {
                namespace,
                selector,
            } => {
                let claims: Api<PersistentVolumeClaim> = match namespace {
                    Some(ns) => Api::namespaced(client.clone(), ns),
                    None => Api::all(client.clone()),
                };
                let params = ListParams::default().labels(selector);
                let list = crate::retry::read(
                    || format!("cannot list claims with -l {selector}"),
                    || claims.list(&params),
                )
                .await?;
                let mut found: Vec<ClaimRef> = list
                    .items
                    .into_iter()
                    .filter(|c| !is_managed(c))
                    .filter_map(|c| {
                        Some(ClaimRef {
                            namespace: c.metadata.namespace?,
                            name: c.metadata.name?,
                        })
                    })
                    .collect();
                found.sort();
                Ok(found)
            }
        }
    }
}

/// True for a temporary claim s3mover made (never backed up itself).
fn is_managed(claim: &PersistentVolumeClaim) -> bool {
    claim
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(crate::labels::ROLE))
        .is_some_and(|role| role == crate::labels::ROLE_CLAIM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_combinations() {
        let names = vec!["a".to_string()];
        assert!(matches!(
            Selection::from_flags(&names, None, "db", false),
            Ok(Selection::Names { .. })
        ));
        assert_eq!(
            Selection::from_flags(&[], Some("app=x"), "db", true).expect("ok"),
            Selection::Labels {
                namespace: None,
                selector: "app=x".into()
            }
        );
        assert!(Selection::from_flags(&names, Some("app=x"), "db", false).is_err());
        assert!(Selection::from_flags(&[], None, "db", false).is_err());
        assert!(Selection::from_flags(&names, None, "db", true).is_err());
    }
}
