//! The id, exit code and hint of every preview error, next to the errors themselves.

use super::cluster::Error as Cluster;
use super::lease::Error as Lease;
use super::{Error as Input, NAMESPACE_PREFIX};
use crate::errors::Diagnosis;

fn diagnosis(id: &'static str, exit_code: i32, hint: String) -> Diagnosis {
    Diagnosis { id, exit_code, hint: Some(hint) }
}

pub fn input(error: &Input) -> Diagnosis {
    let hint = match error {
        Input::Sha { .. } => {
            "give the pull request's head commit, e.g. `--sha ${{ github.event.pull_request.head.sha }}`"
        }
        Input::Number => "give the pull request's number, e.g. `--pr ${{ github.event.number }}`",
        Input::Expiry { .. } => "give a `--ttl` such as 72h or 7d",
    };
    diagnosis("DEV070", 2, hint.to_string())
}

pub fn lease(error: &Lease) -> Diagnosis {
    match error {
        Lease::Busy { .. } => diagnosis(
            "DEV073",
            1,
            "another CI job of this pull request is deploying it; let it finish or wait longer with `--timeout`; a Lease its holder stopped renewing is taken over within 30s".to_string(),
        ),
        Lease::Api { source, .. } => diagnosis("DEV074", 1, refusal_hint(source)),
    }
}

pub fn cluster(error: &Cluster) -> Diagnosis {
    match error {
        Cluster::Api { source, .. } => diagnosis("DEV074", 1, refusal_hint(source)),
        Cluster::Apply(error) => {
            let source = std::error::Error::source(error).and_then(|s| s.downcast_ref::<kube::Error>());
            diagnosis("DEV074", 1, source.map(refusal_hint).unwrap_or_else(|| "check that the cluster answers".into()))
        }
        Cluster::NotOurs { namespace, .. } => diagnosis(
            "DEV076",
            1,
            format!("devenv never takes over a namespace it did not make; delete `{namespace}` yourself if it is a leftover, or use another project name in devenv.yaml"),
        ),
        Cluster::Older { .. } => diagnosis(
            "DEV071",
            1,
            "a newer commit of the pull request is deployed already: nothing to do (a CI job of an older push lost the race)".to_string(),
        ),
        Cluster::Cap { project, .. } => diagnosis(
            "DEV072",
            1,
            format!("remove previews that are done (`devenv preview gc --open-prs …` or `devenv preview down --pr N`), or raise `maxPreviews`; `devenv preview list` shows project `{project}`'s"),
        ),
        Cluster::Stuck { namespace, .. } => diagnosis(
            "DEV075",
            1,
            format!("an object's finalizer holds it: `kubectl api-resources --verbs=list --namespaced -o name | xargs -n1 kubectl get -n {namespace} --ignore-not-found` lists what is left; its controller must be running to let it go"),
        ),
        Cluster::Prune(crate::flux::deploy::Error::PruneTimeout { object, .. }) => {
            diagnosis("DEV066", 1, crate::flux::diagnose::prune_blocked_hint(object))
        }
        Cluster::Prune(error) => {
            let source = std::error::Error::source(error).and_then(|s| s.downcast_ref::<kube::Error>());
            diagnosis("DEV074", 1, source.map(refusal_hint).unwrap_or_else(|| "check that the cluster answers".into()))
        }
    }
}

/// What the API server's refusal means for the identity running devenv.
fn refusal_hint(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if status.code == 403 => format!(
            "the identity running devenv may not do this; a cluster admin grants what previews need with `devenv preview rbac --user NAME | kubectl apply -f -` (writes only in namespaces named {NAMESPACE_PREFIX}*)"
        ),
        kube::Error::Api(status) => format!("the cluster refused it ({} {})", status.code, status.reason),
        _ => "check that the cluster answers (`kubectl --context CONTEXT get ns`)".to_string(),
    }
}
