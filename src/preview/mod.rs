//! Per-pull-request preview environments in a shared cluster: a namespace `pr-<n>-<project>`
//! per pull request, isolated by the objects of `bundle`, and the rights CI needs (`rbac`).
//!
//! `bundle` and `rbac` are pure (objects as JSON, for `kube::apply`); `cluster` and `lease`
//! act on the cluster.

pub mod bundle;
pub mod cluster;
pub mod diagnose;
pub mod lease;
pub mod rbac;

use std::time::Duration;

use crate::config::profile::{Limits, Profile};
use crate::naming::{self, LABEL_MANAGED_BY, MANAGED_BY, MAX_OBJECT_LEN};

/// Every preview namespace starts with this; the admission policy of `rbac` relies on it.
pub const NAMESPACE_PREFIX: &str = "pr-";
/// The account every Flux object of a preview impersonates (`spec.serviceAccountName`).
pub const SERVICE_ACCOUNT: &str = "devenv-preview";
pub const LABEL_PROJECT: &str = "devenv.io/project";
pub const LABEL_PR: &str = "devenv.io/pr";
pub const LABEL_SHA: &str = "devenv.io/sha";
pub const ANNOTATION_EXPIRES_AT: &str = "devenv.io/expires-at";
/// A preview's lifetime when the profile sets no `ttl`.
pub const DEFAULT_TTL: Duration = Duration::from_secs(72 * 3600);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("`{sha}` is not a commit: 4 to 63 hexadecimal digits are needed")]
    Sha { sha: String },
    #[error("the pull request number must be at least 1")]
    Number,
    #[error("the preview's expiry is out of range (ttl {ttl:?})")]
    Expiry { ttl: Duration },
}

/// `pr-<n>-<project>`: a DNS label of at most 63 characters, the same for the same input.
/// The project is sanitized and cut so the whole fits; the number is never cut.
pub fn namespace_name(pr: u64, project: &str) -> String {
    let prefix = format!("{NAMESPACE_PREFIX}{pr}-");
    format!("{prefix}{}", naming::sanitize(project, MAX_OBJECT_LEN - prefix.len()))
}

/// The environment name of a preview (local state, labels of its substitutes): its
/// namespace's name cut to an environment name's length, the number never cut.
pub fn env_name(pr: u64, project: &str) -> String {
    let prefix = format!("{NAMESPACE_PREFIX}{pr}");
    match naming::MAX_ENV_LEN.saturating_sub(prefix.len() + 1) {
        0 => prefix,
        room => format!("{prefix}-{}", naming::sanitize(project, room)),
    }
}

/// One pull request's preview.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preview {
    pub pr: u64,
    /// The project, sanitized to a label value.
    pub project: String,
    pub sha: Option<String>,
    pub namespace: String,
    /// RFC 3339, whole seconds, UTC.
    pub expires_at: String,
}

impl Preview {
    /// The preview of pull request `pr` at commit `sha`, expiring `ttl` after `now`.
    pub fn new(pr: u64, project: &str, sha: Option<&str>, now: jiff::Timestamp, ttl: Duration) -> Result<Self, Error> {
        if pr == 0 {
            return Err(Error::Number);
        }
        // A label value holds at most 63 characters; an abbreviated commit is fine.
        let is_commit =
            |sha: &str| (4..=MAX_OBJECT_LEN).contains(&sha.len()) && sha.bytes().all(|b| b.is_ascii_hexdigit());
        if let Some(sha) = sha
            && !is_commit(sha)
        {
            return Err(Error::Sha { sha: sha.to_string() });
        }
        let expiry = jiff::SignedDuration::try_from(ttl)
            .ok()
            .and_then(|ttl| now.checked_add(ttl).ok())
            .and_then(|at| jiff::Timestamp::from_second(at.as_second()).ok())
            .ok_or(Error::Expiry { ttl })?;
        Ok(Preview {
            pr,
            project: naming::sanitize(project, MAX_OBJECT_LEN),
            sha: sha.map(str::to_ascii_lowercase),
            namespace: namespace_name(pr, project),
            expires_at: expiry.to_string(),
        })
    }

    /// The namespace's labels; `managed-by` is what the CI identity's admission policy checks.
    pub fn labels(&self) -> Vec<(&'static str, String)> {
        let mut labels = vec![
            (LABEL_MANAGED_BY, MANAGED_BY.to_string()),
            (LABEL_PROJECT, self.project.clone()),
            (LABEL_PR, self.pr.to_string()),
        ];
        if let Some(sha) = &self.sha {
            labels.push((LABEL_SHA, sha.clone()));
        }
        labels
    }

    /// The labels every object in the namespace carries: all but the sha, which changes with
    /// every push and is recorded once, on the namespace.
    pub fn object_labels(&self) -> Vec<(&'static str, String)> {
        self.labels().into_iter().filter(|(key, _)| *key != LABEL_SHA).collect()
    }
}

/// What the profile says about previews, with the built-in defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub quota: Quota,
    pub limits: ContainerDefaults,
    /// Pods of this namespace may reach the preview's (the ingress controller's).
    pub ingress_namespace: Option<String>,
    pub ttl: Duration,
}

/// The ResourceQuota's hard limits; `None` is no limit on that resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    pub cpu: Option<String>,
    pub memory: Option<String>,
    pub pods: Option<u32>,
}

/// The LimitRange's defaults for a container that sets no resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerDefaults {
    pub cpu: String,
    pub memory: String,
    pub request_cpu: String,
    pub request_memory: String,
}

impl Settings {
    /// The profile was validated when it loaded, so its quantities and ttl parse.
    pub fn from_profile(profile: &Profile) -> Self {
        let quota = profile.quota.as_ref();
        let limits = profile.limits.clone().unwrap_or_default();
        Settings {
            quota: Quota {
                cpu: quota.and_then(|q| q.cpu.clone()),
                memory: quota.and_then(|q| q.memory.clone()),
                pods: quota.and_then(|q| q.pods),
            },
            limits: ContainerDefaults::from(&limits),
            ingress_namespace: profile.ingress_namespace.clone(),
            ttl: profile.ttl.unwrap_or(DEFAULT_TTL),
        }
    }
}

impl From<&Limits> for ContainerDefaults {
    fn from(limits: &Limits) -> Self {
        ContainerDefaults {
            cpu: limits.cpu().to_string(),
            memory: limits.memory().to_string(),
            request_cpu: limits.request_cpu().to_string(),
            request_memory: limits.request_memory().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> jiff::Timestamp {
        "2026-11-30T20:31:04.5Z".parse().unwrap()
    }

    #[test]
    fn namespace_names_are_labels_of_at_most_63_characters() {
        assert_eq!(namespace_name(7, "shop"), "pr-7-shop");
        assert_eq!(namespace_name(12, "My_Shop"), "pr-12-my-shop");
        let long = "a-very-long-project-name-".repeat(5);
        for pr in [1, 4242, u64::MAX] {
            let name = namespace_name(pr, &long);
            assert_eq!(name.len(), MAX_OBJECT_LEN, "{name}");
            assert!(naming::check_label(&name, MAX_OBJECT_LEN).is_ok(), "{name}");
            assert!(name.starts_with(&format!("pr-{pr}-a-very")), "the number is never cut: {name}");
            assert_eq!(name, namespace_name(pr, &long), "stable");
        }
        // A cut that ends on `-` is trimmed, so the label still ends with an alphanumeric.
        let name = namespace_name(1, &format!("{}-b", "a".repeat(57)));
        assert_eq!(name, format!("pr-1-{}", "a".repeat(57)));
    }

    #[test]
    fn env_names_fit_an_environment_name() {
        assert_eq!(env_name(7, "shop"), "pr-7-shop");
        let long = "a-very-long-project-name-indeed";
        assert_eq!(env_name(12, long), "pr-12-a-very-long-project-name");
        assert!(env_name(12, long).len() <= naming::MAX_ENV_LEN);
        assert_eq!(env_name(u64::MAX, long), format!("pr-{}-a-very", u64::MAX));
    }

    #[test]
    fn a_preview_has_labels_and_an_expiry() {
        let preview = Preview::new(7, "Shop", Some("ABCDEF1234"), now(), Duration::from_secs(3600)).unwrap();
        assert_eq!(preview.namespace, "pr-7-shop");
        assert_eq!(preview.expires_at, "2026-11-30T21:31:04Z", "RFC 3339, whole seconds");
        assert_eq!(
            preview.labels(),
            [
                (LABEL_MANAGED_BY, "devenv".to_string()),
                (LABEL_PROJECT, "shop".to_string()),
                (LABEL_PR, "7".to_string()),
                (LABEL_SHA, "abcdef1234".to_string()),
            ]
        );
        let without_sha = Preview::new(7, "shop", None, now(), DEFAULT_TTL).unwrap();
        assert!(without_sha.labels().iter().all(|(key, _)| *key != LABEL_SHA));
        assert_eq!(without_sha.expires_at, "2026-12-03T20:31:04Z");
    }

    #[test]
    fn bad_input_is_refused() {
        assert_eq!(Preview::new(0, "shop", None, now(), DEFAULT_TTL), Err(Error::Number));
        for sha in ["xyz1234", "abc", &"a".repeat(64)] {
            assert_eq!(
                Preview::new(1, "shop", Some(sha), now(), DEFAULT_TTL),
                Err(Error::Sha { sha: sha.to_string() })
            );
        }
        let forever = Duration::from_secs(u64::MAX);
        assert_eq!(Preview::new(1, "shop", None, now(), forever), Err(Error::Expiry { ttl: forever }));
    }

    #[test]
    fn settings_fill_in_the_built_in_defaults() {
        let profile = crate::config::profile_from_yaml(
            "cluster:\n  provider: eks-namespace\nquota:\n  pods: 5\nlimits:\n  defaultMemory: 1Gi\ningressNamespace: ingress-nginx\nttl: 2h\n",
        )
        .unwrap();
        let settings = Settings::from_profile(&profile);
        assert_eq!(settings.quota, Quota { cpu: None, memory: None, pods: Some(5) });
        assert_eq!(
            settings.limits,
            ContainerDefaults {
                cpu: "500m".into(),
                memory: "1Gi".into(),
                request_cpu: "100m".into(),
                request_memory: "128Mi".into()
            }
        );
        assert_eq!(settings.ingress_namespace.as_deref(), Some("ingress-nginx"));
        assert_eq!(settings.ttl, Duration::from_secs(7200));
        let bare = crate::config::profile_from_yaml("cluster:\n  provider: eks-namespace\n").unwrap();
        assert_eq!(Settings::from_profile(&bare).ttl, DEFAULT_TTL);
    }
}
