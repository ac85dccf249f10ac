//! What a Flux controller logged about one object: the object named on the command line
//! (`kustomization/apps`, `hr/lending/audit`), the controller responsible for its kind, and
//! which of that controller's lines concern it.
//!
//! Flux's controllers log through controller-runtime: every line about an object carries its
//! `controllerKind`, `namespace` and `name` as structured fields. In a pod they log JSON lines
//! (`--log-encoding=json`, Flux's default); the sim cluster runs them with the console encoding,
//! `TIME<TAB>LEVEL<TAB>MESSAGE<TAB>{fields}`. Both are read here.

use kube::api::{Api, DynamicObject, ListParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde::Serialize;

/// A kind of Flux object, with the controller that reconciles it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FluxKind {
    pub kind: &'static str,
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    /// Its short name, as `flux` and `kubectl` accept it.
    short: Option<&'static str>,
    /// The controller's name: its Deployment, its pods' `app` label, the sim's process.
    pub controller: &'static str,
}

/// The kinds `devenv logs` knows.
pub const KINDS: [FluxKind; 7] = [
    FluxKind {
        kind: "Kustomization",
        group: "kustomize.toolkit.fluxcd.io",
        version: "v1",
        plural: "kustomizations",
        short: Some("ks"),
        controller: "kustomize-controller",
    },
    FluxKind {
        kind: "HelmRelease",
        group: "helm.toolkit.fluxcd.io",
        version: "v2",
        plural: "helmreleases",
        short: Some("hr"),
        controller: "helm-controller",
    },
    source("GitRepository", "v1", "gitrepositories", Some("gitrepo")),
    source("OCIRepository", "v1", "ocirepositories", Some("ocirepo")),
    source("HelmRepository", "v1", "helmrepositories", Some("helmrepo")),
    source("HelmChart", "v1", "helmcharts", Some("hc")),
    source("Bucket", "v1", "buckets", None),
];

const fn source(
    kind: &'static str,
    version: &'static str,
    plural: &'static str,
    short: Option<&'static str>,
) -> FluxKind {
    FluxKind { kind, group: "source.toolkit.fluxcd.io", version, plural, short, controller: "source-controller" }
}

impl FluxKind {
    /// The kind named `text`: its kind, plural or short name, in any case.
    pub fn named(text: &str) -> Option<&'static FluxKind> {
        let text = text.to_ascii_lowercase();
        KINDS.iter().find(|k| {
            k.kind.to_ascii_lowercase() == text || k.plural == text || k.short.is_some_and(|short| short == text)
        })
    }

    fn resource(&self) -> ApiResource {
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(self.group, self.version, self.kind), self.plural)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`{given}` is not a Flux kind devenv shows logs of")]
    UnknownKind { given: String },
    #[error("`{given}` is not of the form KIND/NAME or KIND/NAMESPACE/NAME")]
    Form { given: String },
    #[error("the environment has no {kind} `{name}`")]
    NotFound { kind: &'static str, name: String, known: Vec<String> },
    #[error("{kind} `{name}` is in several namespaces ({})", namespaces.join(", "))]
    Ambiguous { kind: &'static str, name: String, namespaces: Vec<String> },
    #[error("cannot list the cluster's {kind} objects")]
    List {
        kind: &'static str,
        #[source]
        source: kube::Error,
    },
}

/// A Flux object as the command line names it; the namespace may be left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub kind: &'static FluxKind,
    pub namespace: Option<String>,
    pub name: String,
}

/// One Flux object in the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Object {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.kind.to_ascii_lowercase(), self.namespace, self.name)
    }
}

impl Target {
    /// `KIND/NAME` or `KIND/NAMESPACE/NAME`; `None` for a word without a slash (a service).
    pub fn parse(text: &str) -> Option<Result<Target, Error>> {
        let (kind, rest) = text.split_once('/')?;
        let form = || Error::Form { given: text.to_string() };
        let Some(flux_kind) = FluxKind::named(kind) else {
            return Some(Err(Error::UnknownKind { given: kind.to_string() }));
        };
        let (namespace, name) = match rest.split_once('/') {
            Some((namespace, name)) => (Some(namespace.to_string()), name),
            None => (None, rest),
        };
        if name.is_empty() || name.contains('/') || namespace.as_deref().is_some_and(str::is_empty) {
            return Some(Err(form()));
        }
        Some(Ok(Target { kind: flux_kind, namespace, name: name.to_string() }))
    }

    /// The object in the cluster, or in `scope` (the namespace of an environment that shares
    /// its cluster). Without a namespace it must be the only one of its kind and name; a miss
    /// lists the environment's Flux objects of every kind.
    pub async fn find(&self, client: &kube::Client, scope: Option<&str>) -> Result<Object, Error> {
        let objects = list(client, self.kind, scope).await?;
        let matches: Vec<&Object> = objects
            .iter()
            .filter(|o| o.name == self.name && self.namespace.as_ref().is_none_or(|ns| *ns == o.namespace))
            .collect();
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => {
                let mut known = Vec::new();
                for kind in &KINDS {
                    // A kind whose API is missing has no objects to offer.
                    known.extend(list(client, kind, scope).await.unwrap_or_default().iter().map(ToString::to_string));
                }
                let name = match &self.namespace {
                    Some(namespace) => format!("{namespace}/{}", self.name),
                    None => self.name.clone(),
                };
                Err(Error::NotFound { kind: self.kind.kind, name, known })
            }
            several => Err(Error::Ambiguous {
                kind: self.kind.kind,
                name: self.name.clone(),
                namespaces: several.iter().map(|o| o.namespace.clone()).collect(),
            }),
        }
    }
}

/// Every object of `kind` in the cluster, or in namespace `scope`, sorted.
async fn list(client: &kube::Client, kind: &FluxKind, scope: Option<&str>) -> Result<Vec<Object>, Error> {
    let api: Api<DynamicObject> = match scope {
        Some(namespace) => Api::namespaced_with(client.clone(), namespace, &kind.resource()),
        None => Api::all_with(client.clone(), &kind.resource()),
    };
    let list = api.list(&ListParams::default()).await.map_err(|source| Error::List { kind: kind.kind, source })?;
    let mut objects: Vec<Object> = list
        .items
        .into_iter()
        .map(|o| Object {
            kind: kind.kind,
            namespace: o.metadata.namespace.unwrap_or_default(),
            name: o.metadata.name.unwrap_or_default(),
        })
        .collect();
    objects.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Ok(objects)
}

/// A controller's log line, read for the fields `devenv logs` needs.
#[derive(Debug, Default, PartialEq)]
pub struct Line {
    pub time: Option<jiff::Timestamp>,
    kind: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
}

impl Line {
    /// Reads a JSON line, or a console line with its fields at the end; an unstructured line
    /// reads as one about no object.
    pub fn parse(text: &str) -> Line {
        let text = text.trim_end();
        let (time, fields) = if text.starts_with('{') {
            let fields = serde_json::from_str::<serde_json::Value>(text).ok();
            let time = fields.as_ref().and_then(|f| f.get("ts")).and_then(json_time);
            (time, fields)
        } else {
            let mut columns = text.split('\t');
            let time = columns.next().and_then(|t| t.parse().ok());
            let fields = text.rfind("\t{").and_then(|at| serde_json::from_str(&text[at + 1..]).ok());
            (time, fields)
        };
        let field = |key: &str| fields.as_ref()?.get(key)?.as_str().map(str::to_string);
        Line { time, kind: field("controllerKind"), namespace: field("namespace"), name: field("name") }
    }

    /// Whether the line is the controller's about `object`.
    pub fn concerns(&self, object: &Object) -> bool {
        self.kind.as_deref() == Some(object.kind)
            && self.namespace.as_deref() == Some(object.namespace.as_str())
            && self.name.as_deref() == Some(object.name.as_str())
    }
}

/// `ts` as zap writes it: an RFC 3339 string, or seconds since the epoch.
fn json_time(value: &serde_json::Value) -> Option<jiff::Timestamp> {
    match value {
        serde_json::Value::String(text) => text.parse().ok(),
        serde_json::Value::Number(number) => {
            let nanos = (number.as_f64()? * 1e9) as i128;
            jiff::Timestamp::from_nanosecond(nanos).ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONSOLE: &str = "2026-11-30T21:01:32.937Z\tINFO\tSource artifact not found, retrying in 1s\t{\"controller\": \"kustomization\", \"controllerGroup\": \"kustomize.toolkit.fluxcd.io\", \"controllerKind\": \"Kustomization\", \"Kustomization\": {\"name\":\"devenv-root\",\"namespace\":\"flux-system\"}, \"namespace\": \"flux-system\", \"name\": \"devenv-root\", \"reconcileID\": \"54032c51\"}";
    const JSON: &str = r#"{"level":"info","ts":"2026-11-30T21:01:43.542Z","msg":"release in-sync with desired state","controller":"helmrelease","controllerGroup":"helm.toolkit.fluxcd.io","controllerKind":"HelmRelease","HelmRelease":{"name":"audit","namespace":"lending"},"namespace":"lending","name":"audit","reconcileID":"096e595e"}"#;

    fn object(kind: &'static str, namespace: &str, name: &str) -> Object {
        Object { kind, namespace: namespace.into(), name: name.into() }
    }

    #[test]
    fn targets_name_a_kind_in_any_spelling_and_maybe_a_namespace() {
        let target = Target::parse("kustomization/apps").unwrap().unwrap();
        assert_eq!((target.kind.kind, target.namespace, target.name.as_str()), ("Kustomization", None, "apps"));
        let target = Target::parse("hr/lending/audit").unwrap().unwrap();
        assert_eq!(target.kind.controller, "helm-controller");
        assert_eq!(target.namespace.as_deref(), Some("lending"));
        assert_eq!(Target::parse("OCIRepositories/x").unwrap().unwrap().kind.controller, "source-controller");
        assert!(Target::parse("orders-db").is_none(), "a service");
        assert!(matches!(Target::parse("deployment/x"), Some(Err(Error::UnknownKind { .. }))));
        for bad in ["ks/", "ks/a/b/c", "ks//b"] {
            assert!(matches!(Target::parse(bad), Some(Err(Error::Form { .. }))), "{bad}");
        }
    }

    #[test]
    fn console_and_json_lines_say_which_object_they_are_about() {
        let line = Line::parse(CONSOLE);
        assert!(line.concerns(&object("Kustomization", "flux-system", "devenv-root")));
        assert!(!line.concerns(&object("Kustomization", "flux-system", "apps")));
        assert!(!line.concerns(&object("OCIRepository", "flux-system", "devenv-root")), "another kind of one name");
        assert_eq!(line.time, Some("2026-11-30T21:01:32.937Z".parse().unwrap()));
        let line = Line::parse(JSON);
        assert!(line.concerns(&object("HelmRelease", "lending", "audit")));
        assert!(!line.concerns(&object("HelmRelease", "other", "audit")), "another namespace");
        assert_eq!(line.time, Some("2026-11-30T21:01:43.542Z".parse().unwrap()));
        // zap's ISO 8601 encoder writes a local offset without a colon.
        let offset = Line::parse(r#"{"ts":"2026-11-30T22:01:43.542+0100","msg":"x"}"#);
        assert_eq!(offset.time, Some("2026-11-30T21:01:43.542Z".parse().unwrap()));
        let epoch = Line::parse(r#"{"ts":1.5,"msg":"x"}"#);
        assert_eq!(epoch.time, Some(jiff::Timestamp::from_millisecond(1500).unwrap()));
        let plain = Line::parse("2026-11-30T21:01:19.608Z\tINFO\tsetup\tstarting manager");
        assert!(!plain.concerns(&object("Kustomization", "flux-system", "apps")));
        assert!(plain.time.is_some());
        assert_eq!(Line::parse("not a log line"), Line::default());
    }
}
