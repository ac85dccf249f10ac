//! The id, exit code and hint of every Flux error, next to the errors themselves.

use std::fmt::Write as _;

use super::Error;
use super::charts::Error as Chart;
use super::deploy::Error as Deploy;
use super::files::Error as Files;
use super::logs::{Error as Object, KINDS};
use super::pack::Error as Pack;
use super::wait::Error as Wait;
use crate::errors::Diagnosis;

/// The id, exit code (1, or 2 for what the user's files or devenv.yaml must fix) and hint
/// of a Flux error.
pub fn flux(error: &Error) -> Diagnosis {
    let (id, hint): (&'static str, Option<String>) = match error {
        Error::Contract { .. } => return Diagnosis {
            id: "DEV060",
            exit_code: 2,
            hint: Some("give each variable a value: map a substitute output to it under `keys:` in devenv.yaml, add it to the profile's `environment:`, or give it a default in the manifest (`${VAR:=default}`)".into()),
        },
        Error::Checks { id, .. } => {
            let hint = match *id {
                "DEV067" => "Flux substitutes in the manifest's text after re-serialising it, so the quotes around `${VAR}` are gone and a value that reads as a number or boolean stops being a string: apply each fix above (kustomize-controller docs, \"Post build substitution of numbers and booleans\")",
                "DEV068" => "correct or remove the entry in devenv.yaml's `overlay.disable`; each fix above says what it could have meant",
                _ => "fix each file at the place shown: kustomize would stop building the Kustomization that reads it, and Flux would report it from its own copy of the files",
            };
            return Diagnosis { id, exit_code: 2, hint: Some(hint.into()) };
        }
        Error::SourceRef(_) => {
            return Diagnosis { id: "DEV010", exit_code: 2, hint: Some("write it like `GitRepository/flux-system`".into()) };
        }
        Error::Pack(Pack::Chart { source, .. }) => ("DEV061", Some(chart_hint(source))),
        Error::Chart(source) => ("DEV061", Some(chart_hint(source))),
        Error::Pack(Pack::Collision { .. }) => (
            "DEV061",
            Some("rename one of them, switch one off (`overlay.disable`), or give the environment a cluster of its own (`cluster.isolation: cluster`)".into()),
        ),
        Error::Pack(Pack::Files(Files::TooLarge { path, .. })) => (
            "DEV085",
            Some(format!(
                "a file that size is not for the cluster: list `{path}` in .gitignore (ignored files are not packed) or move it out of the directories the Kustomizations read; the limit is Flux's own for unpacking an artifact"
            )),
        ),
        Error::Pack(Pack::Files(Files::NameClash { .. })) => (
            "DEV061",
            Some("rename one of them; a name in UTF-8 is safest, since Flux and kustomize handle it everywhere".into()),
        ),
        Error::Pack(_) => ("DEV061", Some("check that the file is readable and valid YAML".into())),
        Error::Deploy(e) => match e.as_ref() {
            Deploy::Wait(Wait::Failed { .. }) => (
                "DEV062",
                Some("fix the manifest Flux names; `devenv up` again pushes the fix in seconds".into()),
            ),
            Deploy::Wait(Wait::Timeout { .. }) => (
                "DEV063",
                Some("raise `--timeout`, or look at the objects still waiting (`kubectl get kustomizations,helmreleases -A`)".into()),
            ),
            Deploy::PruneTimeout { object, .. } | Deploy::HeldInDeletion { object, .. } => (
                "DEV066",
                Some(prune_blocked_hint(object)),
            ),
            Deploy::FluxMissing { .. } => (
                "DEV064",
                Some("install Flux in the cluster (`flux install`); the sim profile starts it for you".into()),
            ),
            Deploy::Artifact(_) | Deploy::Charts(_) => (
                "DEV065",
                Some("check that the environment's registry is running (`devenv status`)".into()),
            ),
            other => ("DEV065", Some(cluster_refusal_hint(other))),
        },
    };
    Diagnosis { id, exit_code: 1, hint }
}

/// The id, exit code and hint of a Flux object named on the command line.
pub fn object(error: &Object) -> Diagnosis {
    let kinds = || KINDS.iter().map(|k| k.kind.to_ascii_lowercase()).collect::<Vec<_>>().join(", ");
    let (id, exit_code, hint) = match error {
        Object::UnknownKind { .. } => ("DEV014", 2, format!("name a Flux kind: {}", kinds())),
        Object::Form { .. } => {
            ("DEV014", 2, "write it like kustomization/apps or kustomization/flux-system/apps".to_string())
        }
        Object::NotFound { known, .. } if known.is_empty() => {
            ("DEV014", 1, "the environment's cluster has no Flux objects; `devenv up` applies them".to_string())
        }
        Object::NotFound { name, known, .. } => {
            let mut hint = format!("its Flux objects: {}", known.join(", "));
            let names: Vec<&str> = known.iter().map(|k| k.rsplit('/').next().unwrap_or(k)).collect();
            if let Some(best) = crate::config::suggest(name.rsplit('/').next().unwrap_or(name), &names)
                && let Some(object) = known.iter().find(|k| k.ends_with(&format!("/{best}")))
            {
                let _ = write!(hint, "; did you mean `{object}`?");
            }
            ("DEV014", 1, hint)
        }
        Object::Ambiguous { kind, name, namespaces } => {
            ("DEV014", 2, format!("name the namespace too: {}/{}/{name}", kind.to_ascii_lowercase(), namespaces[0]))
        }
        Object::List { .. } => {
            ("DEV045", 1, "`devenv status` shows whether the cluster answers; `devenv up` starts it".to_string())
        }
    };
    Diagnosis { id, exit_code, hint: Some(hint) }
}

/// What to do about a chart devenv packs or publishes from the repository.
fn chart_hint(error: &Chart) -> String {
    match error {
        Chart::ValuesFile { .. } => "each `spec.chart.spec.valuesFiles` entry is a YAML file of values, relative to the repository root; `ignoreMissingValuesFiles: true` skips missing ones".into(),
        Chart::Version { .. } => "write Chart.yaml's `version:` as SemVer 2 without a leading `v` (`1.4.0`, `1.4.0-rc.1`): source-controller skips chart tags that are not".into(),
        Chart::Outside { .. } => "devenv publishes and installs only what is inside the repository: move the chart or values file into it (a symbolic link must point inside it too)".into(),
        Chart::VersionNotAllowed { .. } => "raise the chart's `version:` in Chart.yaml or widen the HelmRelease's `spec.chart.spec.version`: in the cluster Flux would not find a matching chart either".into(),
        _ => "`spec.chart.spec.chart` must name a chart directory of the repository (or a chart of `charts:`), with its Chart.yaml (and a values.yaml when the HelmRelease has valuesFiles)".into(),
    }
}

/// How to find what holds an object Flux could not delete (`Kind/namespace/name`).
pub(crate) fn prune_blocked_hint(object: &str) -> String {
    let mut parts = object.splitn(3, '/');
    let look = match (parts.next(), parts.next(), parts.next()) {
        (Some(kind), Some(namespace), Some(name)) => format!("`kubectl get {kind} {name} -n {namespace} -o yaml`"),
        _ => format!("`kubectl get {object} -o yaml`"),
    };
    format!(
        "its `metadata.finalizers` name what holds it ({look}); once that is resolved, the same command again finishes the job, or give it longer with `--timeout`"
    )
}

/// What to do when the cluster did not take an object: the API server's refusal says why,
/// while no answer at all means the cluster is not reachable.
fn cluster_refusal_hint(error: &Deploy) -> String {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    let mut status = None;
    while let Some(current) = cause {
        if let Some(kube::Error::Api(answer)) = current.downcast_ref::<kube::Error>() {
            status = Some(answer);
            break;
        }
        cause = current.source();
    }
    match status {
        Some(status) if status.message.contains("because it is being terminated") => {
            "the namespace is being deleted: wait until it is gone (an object's finalizer may hold it, see `kubectl get all -n NAMESPACE`), then run `devenv up` again".into()
        }
        Some(status) => format!("the cluster refused it ({} {}); the cause above is its answer", status.code, status.reason),
        None => "check that the cluster is reachable (`devenv status`)".into(),
    }
}
