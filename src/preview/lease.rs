//! One run at a time per preview, across machines: a Lease in the preview's namespace that
//! `preview up` and `preview down` hold while they change it. Two CI jobs of one pull
//! request (a push while the last one still deploys) therefore run one after the other.
//!
//! The holder renews the Lease while it works; a Lease not renewed for its duration (its
//! holder was killed) is taken over.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, DeleteParams, PostParams};

use crate::naming::{LABEL_MANAGED_BY, MANAGED_BY};
use crate::ui::{Reporter, ReporterExt};

pub const NAME: &str = "devenv-preview";
/// Kept on the Lease: what its holder runs.
const ANNOTATION_COMMAND: &str = "devenv.io/command";
/// How long a Lease lasts without renewal.
const DURATION: Duration = Duration::from_secs(30);
const RENEW_EVERY: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("another run is changing preview `{namespace}`: {holder} ({command}), since {since}; waited {}", crate::state::human(*waited))]
    Busy { namespace: String, holder: String, command: String, since: String, waited: Duration },
    #[error("cannot {operation} the Lease of preview `{namespace}`")]
    Api {
        operation: &'static str,
        namespace: String,
        #[source]
        source: kube::Error,
    },
}

/// The Lease, held until `release` (or, if the process dies, until it expires).
pub struct Held {
    api: Api<Lease>,
    namespace: String,
    renewing: tokio::task::JoinHandle<()>,
}

/// Who holds a Lease: this machine and process.
fn identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".to_string());
    format!("{host}/pid {}", std::process::id())
}

/// Takes the preview's Lease, waiting up to `timeout` for another holder to finish.
pub async fn acquire(
    client: &kube::Client,
    namespace: &str,
    command: &str,
    timeout: Duration,
    reporter: &dyn Reporter,
) -> Result<Held, Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let failed = |operation, source| Error::Api { operation, namespace: namespace.to_string(), source };
    let me = identity();
    let started = Instant::now();
    let mut told = false;
    loop {
        let now = jiff::Timestamp::now();
        let current = api.get_opt(NAME).await.map_err(|source| failed("read", source))?;
        let attempt = match &current {
            None => api.create(&PostParams::default(), &lease(&me, command, now, None)).await,
            Some(held) if is_free(held, now) => {
                api.replace(NAME, &PostParams::default(), &lease(&me, command, now, Some(held))).await
            }
            Some(held) => {
                let spec = held.spec.clone().unwrap_or_default();
                let holder = spec.holder_identity.unwrap_or_default();
                let command = (held.metadata.annotations.as_ref())
                    .and_then(|a| a.get(ANNOTATION_COMMAND))
                    .cloned()
                    .unwrap_or_default();
                let since = spec.acquire_time.map(|t| t.0.to_string()).unwrap_or_default();
                if started.elapsed() >= timeout {
                    let namespace = namespace.to_string();
                    return Err(Error::Busy { namespace, holder, command, since, waited: started.elapsed() });
                }
                if !told {
                    reporter.warning(&format!(
                        "waiting for {holder} ({command}), which has been changing preview `{namespace}` since {since}"
                    ));
                    told = true;
                }
                tokio::time::sleep(POLL).await;
                continue;
            }
        };
        match attempt {
            Ok(_) => break,
            // Someone else took it between the read and the write: look again.
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(source) => return Err(failed("take", source)),
        }
    }
    let renewing = tokio::spawn(renew(api.clone(), me));
    Ok(Held { api, namespace: namespace.to_string(), renewing })
}

impl Held {
    /// Gives the Lease up, so the next run need not wait for it to expire.
    pub async fn release(self) -> Result<(), Error> {
        self.renewing.abort();
        match self.api.delete(NAME, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            // The namespace went (`preview down`), and the Lease with it.
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(source) => Err(Error::Api { operation: "release", namespace: self.namespace.clone(), source }),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // Not released (an error on the way): the Lease expires by itself.
        self.renewing.abort();
    }
}

/// Free: nobody holds it, or its holder stopped renewing it.
fn is_free(lease: &Lease, now: jiff::Timestamp) -> bool {
    let Some(spec) = &lease.spec else { return true };
    if spec.holder_identity.as_deref().unwrap_or_default().is_empty() {
        return true;
    }
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(0));
    match &spec.renew_time {
        Some(renewed) => renewed.0.as_second() + duration < now.as_second(),
        None => true,
    }
}

fn lease(holder: &str, command: &str, now: jiff::Timestamp, previous: Option<&Lease>) -> Lease {
    let transitions = previous.and_then(|l| l.spec.as_ref()).and_then(|s| s.lease_transitions).unwrap_or(0);
    Lease {
        metadata: ObjectMeta {
            name: Some(NAME.to_string()),
            resource_version: previous.and_then(|l| l.metadata.resource_version.clone()),
            labels: Some([(LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string())].into()),
            annotations: Some([(ANNOTATION_COMMAND.to_string(), command.to_string())].into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.to_string()),
            lease_duration_seconds: Some(DURATION.as_secs() as i32),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions + i32::from(previous.is_some())),
            ..Default::default()
        }),
    }
}

/// Renews the Lease until aborted; a failed renewal is tried again at the next tick.
async fn renew(api: Api<Lease>, holder: String) {
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        let Ok(Some(mut current)) = api.get_opt(NAME).await else { continue };
        let Some(spec) = current.spec.as_mut() else { continue };
        if spec.holder_identity.as_deref() != Some(holder.as_str()) {
            return;
        }
        spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
        let _ = api.replace(NAME, &PostParams::default(), &current).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_free_when_unheld_or_not_renewed_in_time() {
        let now: jiff::Timestamp = "2026-12-01T12:00:00Z".parse().unwrap();
        let held = lease("ci/pid 1", "devenv preview up --pr 7", now, None);
        assert!(!is_free(&held, now));
        assert!(!is_free(&held, now.checked_add(jiff::SignedDuration::from_secs(30)).unwrap()));
        assert!(is_free(&held, now.checked_add(jiff::SignedDuration::from_secs(31)).unwrap()), "its holder died");
        let mut released = held.clone();
        released.spec.as_mut().unwrap().holder_identity = None;
        assert!(is_free(&released, now));
        let taken = lease("ci/pid 2", "devenv preview up --pr 7", now, Some(&held));
        assert_eq!(taken.spec.unwrap().lease_transitions, Some(1));
    }
}
