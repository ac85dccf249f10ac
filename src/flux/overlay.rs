//! The local overlay: a rewrite of the repository's Flux objects inside the packed artifact.
//!
//! The user's files are never edited, and app manifests are never rewritten: only Flux
//! Kustomizations, HelmReleases and sources are, so Flux still does every kustomize build,
//! substitution and Helm render. Rewriting files (rather than patching the root
//! Kustomization) reaches Kustomizations at every depth.

use std::collections::{BTreeMap, BTreeSet};

use serde_yaml::{Mapping, Value};

use super::names::SOURCE_NAME;

/// What the artifacts of re-pointed Kustomizations are called: `devenv-ks-<name>`.
const KUSTOMIZATION_SOURCE_PREFIX: &str = "devenv-ks-";
/// What the sources of charts HelmReleases take from the repository are called.
const CHART_SOURCE_PREFIX: &str = "devenv-chart-";
/// Longest Kubernetes name devenv gives a source (it also ends up in label values).
const MAX_SOURCE_NAME: usize = 63;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot parse YAML document {document}")]
    Parse {
        document: usize,
        #[source]
        source: serde_yaml::Error,
    },
}

/// A Flux object reference such as `GitRepository/flux-system`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRef {
    pub kind: String,
    pub name: String,
}

impl SourceRef {
    /// Parses `Kind/name`.
    pub fn parse(text: &str) -> Option<Self> {
        let (kind, name) = text.split_once('/')?;
        (!kind.is_empty() && !name.is_empty() && !name.contains('/'))
            .then(|| SourceRef { kind: kind.to_string(), name: name.to_string() })
    }
}

/// What the overlay does, from devenv.yaml.
#[derive(Debug, Clone)]
pub struct Settings {
    pub flux_namespace: String,
    /// The environment's namespace when it shares its cluster: every Flux object moves
    /// there, and what each applies lands there too.
    pub relocate_to: Option<String>,
    /// The ServiceAccount every Kustomization and HelmRelease acts as
    /// (`spec.serviceAccountName`), in the namespace it lives in.
    pub service_account: Option<String>,
    /// The repository's own source, re-pointed at the artifact.
    pub own_source: SourceRef,
    pub config_map: String,
    pub secret: String,
    /// Flux objects switched off: `name` or `namespace/name`.
    pub disable: Vec<String>,
    pub max_replicas: Option<u32>,
    /// Extra entries for every Kustomization's `spec.patches`.
    pub patches: Vec<Value>,
    /// The source-URL map.
    pub source_urls: Vec<SourceUrl>,
    /// The environment's registry as pods reach it, for `{{ registry }}`.
    pub registry: String,
    /// Removes admission webhook configurations: on a cluster whose pods never run (sim),
    /// a webhook has nothing behind it and would reject every request it matches.
    pub drop_webhooks: bool,
    /// Readable source names that more than one Kustomization or chart would get
    /// (`team-a/apps` and `team/a-apps`); each of those gets a hash of its own instead.
    /// Filled by `pack`, which sees every file.
    pub clashing: BTreeSet<String>,
    /// The charts devenv publishes from the repository (`charts:`), as a HelmRepository
    /// re-pointed at the environment's registry finds them.
    pub published_charts: Vec<PublishedChart>,
    /// Each HelmRepository's URL (by `namespace/name`) after the source-URL map; filled by
    /// `pack` when there are published charts.
    pub helm_repositories: BTreeMap<String, String>,
    /// Objects of `overlay.disable` named `Kind/namespace/name`, as delete patches for the
    /// Kustomization (`namespace/name`) that applies each: `(object, patch)`. Filled by `pack`,
    /// which knows the files each Kustomization reads.
    pub deletions: BTreeMap<String, Vec<(String, Value)>>,
}

/// A chart of `charts:`: `<url>/<name>` is where it is published.
#[derive(Debug, Clone)]
pub struct PublishedChart {
    /// `oci://<registry as pods reach it>/<repository>`
    pub url: String,
    pub name: String,
    /// Its directory in the repository.
    pub path: String,
}

impl Settings {
    /// The namespace a Flux object of the repository's `namespace` ends up in.
    pub fn home(&self, namespace: &str) -> String {
        self.relocate_to.clone().unwrap_or_else(|| namespace.to_string())
    }

    /// Where devenv's own Flux objects (sources, the root) live.
    pub fn objects_namespace(&self) -> String {
        self.home(&self.flux_namespace)
    }
}

/// One entry of the source-URL map (see `SourceUrlConfig`).
#[derive(Debug, Clone)]
pub struct SourceUrl {
    pub url: String,
    pub to: String,
    pub insecure: bool,
    pub drop_verify: bool,
}

/// Replaces `{{ registry }}` in a URL template.
pub fn render_registry(template: &str, registry: &str) -> String {
    template.replace("{{ registry }}", registry).replace("{{registry}}", registry)
}

/// The OCIRepository serving a re-pointed Kustomization's files. One per Kustomization: an
/// edit then changes only the artifacts that read the edited file, and Flux checks a
/// dependency's revision only when it shares the dependant's source, so a changed leaf does
/// not wait for its unchanged dependencies to re-apply.
pub fn source_name(namespace: &str, name: &str, settings: &Settings) -> String {
    let readable = if namespace == settings.flux_namespace { name.to_string() } else { format!("{namespace}-{name}") };
    valid_name(KUSTOMIZATION_SOURCE_PREFIX, &readable, &format!("{namespace}/{name}"), &settings.clashing)
}

/// The OCIRepository serving a chart directory of the repository, e.g. `devenv-chart-charts-audit`.
pub fn chart_source_name(path: &str, settings: &Settings) -> String {
    valid_name(CHART_SOURCE_PREFIX, &path.replace('/', "-"), path, &settings.clashing)
}

/// `prefix` + `readable` when that is a valid Kubernetes name no other source claims; else a
/// readable prefix and a hash of the `original` (which is unique), so it stays valid and unique.
fn valid_name(prefix: &str, readable: &str, original: &str, clashing: &BTreeSet<String>) -> String {
    let full = format!("{prefix}{readable}");
    // A name a parent substitutes (`apps-${CLUSTER}`) or a long one is not valid as it is.
    if full.len() <= MAX_SOURCE_NAME
        && crate::naming::check_label(&full, MAX_SOURCE_NAME).is_ok()
        && !clashing.contains(&full)
    {
        return full;
    }
    let hash = short_hash(original);
    let readable = crate::naming::sanitize(&full, MAX_SOURCE_NAME - hash.len() - 1);
    format!("{}-{hash}", readable.trim_end_matches('-'))
}

/// The first 8 hex digits of the SHA-256 of `text`.
fn short_hash(text: &str) -> String {
    let digest = super::artifact::digest(text.as_bytes());
    let hex = digest.trim_start_matches("sha256:");
    hex[..8].to_string()
}

/// Whether an OCIRepository name is one of devenv's artifacts.
pub fn is_devenv_source(name: &str) -> bool {
    name == SOURCE_NAME || name.starts_with(KUSTOMIZATION_SOURCE_PREFIX) || name.starts_with(CHART_SOURCE_PREFIX)
}

/// A Kustomization the overlay pointed at an artifact of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repointed {
    /// `namespace/name` of the Kustomization.
    pub kustomization: String,
    /// The directory it builds.
    pub path: String,
    /// The OCIRepository (in the Flux namespace) that serves it.
    pub source: String,
}

/// A chart a HelmRelease takes from the repository's own source, to be served from the
/// working tree instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalChart {
    /// The chart's directory, relative to the repository root.
    pub path: String,
    /// The OCIRepository (in the Flux namespace) that serves it.
    pub source: String,
    /// `spec.chart.spec.valuesFiles`, relative to the repository root: merged in order, they
    /// replace the chart's values.yaml, as source-controller does when it builds the chart.
    pub values_files: Vec<String>,
    /// `spec.chart.spec.ignoreMissingValuesFiles`.
    pub ignore_missing_values_files: bool,
    /// `spec.chart.spec.version` of a chart asked of a HelmRepository, which the working
    /// tree's Chart.yaml must satisfy.
    pub version: Option<String>,
}

/// A Flux object the overlay changed, as YAML before and after (`None`: removed).
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectDiff {
    /// `Kind/namespace/name`
    pub object: String,
    pub before: String,
    pub after: Option<String>,
}

/// One change the overlay made, for `devenv plan`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// `Kind/namespace/name`
    pub object: String,
    pub what: String,
}

/// The outcome of rewriting one file.
#[derive(Debug, Clone, Default)]
pub struct Rewritten {
    pub text: String,
    pub changes: Vec<Change>,
    /// Namespaces of Kustomizations that substitute from the environment ConfigMap.
    pub substitution_namespaces: BTreeSet<String>,
    pub repointed: Vec<Repointed>,
    pub local_charts: Vec<LocalChart>,
    /// `namespace/name` and URL (after the map) of each HelmRepository in the file.
    pub helm_repositories: Vec<(String, String)>,
    /// The Flux objects of the file after the rewrite, and their `Kind/namespace/name`.
    pub objects: Vec<Value>,
    pub keys: Vec<String>,
    pub diffs: Vec<ObjectDiff>,
}

/// Whether a file may hold Flux objects; a cheap test before parsing.
pub fn may_hold_flux_objects(text: &str) -> bool {
    text.contains("toolkit.fluxcd.io/")
}

/// `Kind/namespace/name` of each Flux object in a multi-document YAML file the overlay leaves
/// as it is (a document that does not parse holds none).
pub fn flux_keys(text: &str, flux_namespace: &str) -> Vec<String> {
    serde_yaml::Deserializer::from_str(text)
        .filter_map(|document| <Value as serde::Deserialize>::deserialize(document).ok())
        .filter_map(|value| FluxObject::of(&value, flux_namespace).map(|o| o.display()))
        .collect()
}

/// Rewrites the Flux objects of a multi-document YAML file; `None` when nothing changes.
pub fn rewrite(text: &str, settings: &Settings) -> Result<Option<Rewritten>, Error> {
    let mut out = Rewritten::default();
    let mut documents = Vec::new();
    let mut changed = false;
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value: Value =
            serde::Deserialize::deserialize(document).map_err(|source| Error::Parse { document: index + 1, source })?;
        match rewrite_object(value, settings, &mut out) {
            Some((value, object_changed)) => {
                changed |= object_changed;
                documents.push(value);
            }
            None => changed = true,
        }
    }
    if !changed {
        return Ok(None);
    }
    let rendered: Vec<String> = documents
        .iter()
        .filter(|d| !d.is_null())
        .map(|d| serde_yaml::to_string(d).expect("YAML values serialise"))
        .collect();
    out.text = rendered.join("---\n");
    Ok(Some(out))
}

/// Rewrites one object; `None` removes it. The flag says whether it changed.
fn rewrite_object(mut value: Value, settings: &Settings, out: &mut Rewritten) -> Option<(Value, bool)> {
    let Some(identity) = FluxObject::of(&value, &settings.flux_namespace) else {
        return Some((value, false));
    };
    let object = identity.display_in(&settings.home(&identity.namespace));
    let before = value.clone();
    let mut changes = Vec::new();
    let result = rewrite_spec(&mut value, &identity, settings, &mut changes, out);
    out.changes.extend(changes.into_iter().map(|what| Change { object: object.clone(), what }));
    let yaml = |v: &Value| serde_yaml::to_string(v).expect("YAML values serialise");
    match result {
        Keep::Remove => {
            out.diffs.push(ObjectDiff { object, before: yaml(&before), after: None });
            None
        }
        Keep::Unchanged => {
            out.keys.push(object);
            out.objects.push(value.clone());
            Some((value, false))
        }
        Keep::Changed => {
            out.diffs.push(ObjectDiff { object: object.clone(), before: yaml(&before), after: Some(yaml(&value)) });
            out.keys.push(object);
            out.objects.push(value.clone());
            Some((value, true))
        }
    }
}

enum Keep {
    Remove,
    Unchanged,
    Changed,
}

fn rewrite_spec(
    value: &mut Value,
    identity: &FluxObject,
    settings: &Settings,
    changes: &mut Vec<String>,
    out: &mut Rewritten,
) -> Keep {
    if identity.disabled(&settings.disable) {
        changes.push("removed (overlay.disable)".to_string());
        return Keep::Remove;
    }
    let before = value.clone();
    let Some(spec) = value.get_mut("spec").and_then(Value::as_mapping_mut) else { return Keep::Unchanged };
    if drop_disabled_dependencies(spec, &identity.namespace, &settings.disable) {
        changes.push("dropped dependsOn entries on disabled objects".to_string());
    }
    match (identity.group.as_str(), identity.kind.as_str()) {
        ("kustomize", "Kustomization") => {
            if let Some(source) = repoint_source(spec, identity, settings) {
                changes.push(format!("sourceRef → OCIRepository/{}/{source}", settings.objects_namespace()));
                let path = spec.get("path").and_then(Value::as_str).unwrap_or("./");
                out.repointed.push(Repointed {
                    kustomization: format!("{}/{}", settings.home(&identity.namespace), identity.name),
                    path: crate::flux::closure::normalise(path),
                    source,
                });
            }
            if let Some(post_build) = spec.get_mut("postBuild").and_then(Value::as_mapping_mut) {
                out.substitution_namespaces.insert(settings.home(&identity.namespace));
                for (kind, name) in [("ConfigMap", &settings.config_map), ("Secret", &settings.secret)] {
                    if add_substitute_from(post_build, kind, name) {
                        changes.push(format!("postBuild.substituteFrom += {kind}/{name}"));
                    }
                }
            }
            let mut patches = settings.patches.clone();
            patches.extend(settings.max_replicas.map(replica_patches).unwrap_or_default());
            for (object, patch) in settings
                .deletions
                .get(&format!("{}/{}", settings.home(&identity.namespace), identity.name))
                .into_iter()
                .flatten()
            {
                changes.push(format!("deletes {object} from what it applies (overlay.disable)"));
                patches.push(patch.clone());
            }
            if settings.drop_webhooks {
                patches.extend(webhook_removal_patches());
            }
            if !patches.is_empty() {
                let count = patches.len();
                append_sequence(spec, "patches", patches);
                changes.push(format!("spec.patches += {count} local patch(es)"));
            }
        }
        ("helm", "HelmRelease") => {
            if let Some(chart) = repoint_chart(spec, identity, settings) {
                let mut what = format!(
                    "chart `{}` from the working tree: chartRef → OCIRepository/{}/{}",
                    chart.path,
                    settings.objects_namespace(),
                    chart.source
                );
                // chartRef has no valuesFiles: the packaged chart carries them instead.
                if !chart.values_files.is_empty() {
                    what.push_str(&format!(" (values.yaml = valuesFiles {} merged)", chart.values_files.join(", ")));
                }
                changes.push(what);
                out.local_charts.push(chart);
            }
            let mut patches = settings.max_replicas.map(replica_patches).unwrap_or_default();
            if settings.drop_webhooks {
                patches.extend(webhook_removal_patches());
            }
            if !patches.is_empty() {
                let renderer = Value::Mapping(Mapping::from_iter([(
                    "kustomize".into(),
                    Value::Mapping(Mapping::from_iter([("patches".into(), Value::Sequence(patches))])),
                )]));
                append_sequence(spec, "postRenderers", vec![renderer]);
                let mut what = Vec::new();
                what.extend(settings.max_replicas.map(|max| format!("replicas set to {max}")));
                what.extend(settings.drop_webhooks.then(|| "admission webhooks removed".to_string()));
                changes.push(format!("postRenderers += {}", what.join(", ")));
            }
        }
        ("source", "GitRepository" | "OCIRepository" | "HelmRepository") => {
            if let Some(what) = map_source_url(spec, &identity.kind, settings) {
                changes.push(what);
            }
            if let Some(url) = spec.get("url").and_then(Value::as_str).filter(|_| identity.kind == "HelmRepository") {
                out.helm_repositories.push((format!("{}/{}", identity.namespace, identity.name), url.to_string()));
            }
        }
        _ => {}
    }
    if let Some(namespace) = &settings.relocate_to {
        relocate(value, identity, namespace);
        changes.push(format!("moved to namespace {namespace}, with everything it applies"));
    }
    if let Some(account) = &settings.service_account
        && matches!(
            (identity.group.as_str(), identity.kind.as_str()),
            ("kustomize", "Kustomization") | ("helm", "HelmRelease")
        )
        && let Some(spec) = value.get_mut("spec").and_then(Value::as_mapping_mut)
        && spec.get("serviceAccountName").and_then(Value::as_str) != Some(account)
    {
        spec.insert("serviceAccountName".into(), account.as_str().into());
        changes.push(format!("acts as ServiceAccount {account} (spec.serviceAccountName)"));
    }
    if *value == before { Keep::Unchanged } else { Keep::Changed }
}

/// The identity of a Flux object.
struct FluxObject {
    group: String,
    kind: String,
    namespace: String,
    name: String,
}

impl FluxObject {
    fn of(value: &Value, default_namespace: &str) -> Option<Self> {
        let api_version = value.get("apiVersion")?.as_str()?;
        let group = api_version.strip_suffix(".toolkit.fluxcd.io").map(str::to_string).or_else(|| {
            let (group, _version) = api_version.split_once('/')?;
            group.strip_suffix(".toolkit.fluxcd.io").map(str::to_string)
        })?;
        let metadata = value.get("metadata")?;
        Some(FluxObject {
            group,
            kind: value.get("kind")?.as_str()?.to_string(),
            name: metadata.get("name")?.as_str()?.to_string(),
            namespace: metadata.get("namespace").and_then(Value::as_str).unwrap_or(default_namespace).to_string(),
        })
    }

    fn display(&self) -> String {
        self.display_in(&self.namespace)
    }

    /// `Kind/namespace/name` once the object lives in `namespace`.
    fn display_in(&self, namespace: &str) -> String {
        format!("{}/{}/{}", self.kind, namespace, self.name)
    }

    fn disabled(&self, disable: &[String]) -> bool {
        is_disabled(disable, &self.namespace, &self.name)
    }
}

fn is_disabled(disable: &[String], namespace: &str, name: &str) -> bool {
    disable.iter().any(|d| match d.split_once('/') {
        Some((ns, n)) => ns == namespace && n == name,
        None => d == name,
    })
}

/// Removes `dependsOn` entries that name disabled objects, so dependants do not wait forever.
fn drop_disabled_dependencies(spec: &mut Mapping, namespace: &str, disable: &[String]) -> bool {
    let Some(Value::Sequence(depends_on)) = spec.get_mut("dependsOn") else { return false };
    let before = depends_on.len();
    depends_on.retain(|entry| {
        let name = entry.get("name").and_then(Value::as_str).unwrap_or_default();
        let ns = entry.get("namespace").and_then(Value::as_str).unwrap_or(namespace);
        !is_disabled(disable, ns, name)
    });
    depends_on.len() != before
}

/// Whether a `sourceRef` names the repository's own source; its namespace defaults to the
/// referring object's, as in Flux.
fn is_own_source(source: &Value, referrer_namespace: &str, settings: &Settings) -> bool {
    let field = |name: &str| source.get(name).and_then(Value::as_str);
    let own = &settings.own_source;
    field("kind") == Some(own.kind.as_str())
        && field("name") == Some(own.name.as_str())
        && field("namespace").unwrap_or(referrer_namespace) == settings.flux_namespace
}

/// A reference to one of devenv's OCIRepositories, which live beside the root.
fn artifact_ref(name: &str, settings: &Settings) -> Value {
    Value::Mapping(Mapping::from_iter([
        ("kind".into(), "OCIRepository".into()),
        ("name".into(), name.into()),
        ("namespace".into(), settings.objects_namespace().into()),
    ]))
}

/// Moves a Flux object into the environment's namespace with every namespace it names: its
/// references to other Flux objects (which move too) and where it applies or installs.
/// A Kustomization's `targetNamespace` puts every namespaced object it applies there; the
/// repository's Namespace objects are dropped (the environment has one namespace), and
/// cluster-wide objects, which environments sharing the cluster share, are never pruned by
/// one of them.
fn relocate(value: &mut Value, identity: &FluxObject, namespace: &str) {
    if let Some(metadata) = value.get_mut("metadata").and_then(Value::as_mapping_mut) {
        metadata.insert("namespace".into(), namespace.into());
    }
    let Some(spec) = value.get_mut("spec").and_then(Value::as_mapping_mut) else { return };
    let set_namespace = |reference: Option<&mut Value>| {
        if let Some(reference) = reference.and_then(Value::as_mapping_mut).filter(|r| r.contains_key("namespace")) {
            reference.insert("namespace".into(), namespace.into());
        }
    };
    set_namespace(spec.get_mut("sourceRef"));
    set_namespace(spec.get_mut("chartRef"));
    set_namespace(spec.get_mut("chart").and_then(|c| c.get_mut("spec")).and_then(|s| s.get_mut("sourceRef")));
    for list in ["dependsOn", "healthChecks"] {
        if let Some(Value::Sequence(entries)) = spec.get_mut(list) {
            entries.iter_mut().for_each(|entry| set_namespace(Some(entry)));
        }
    }
    match (identity.group.as_str(), identity.kind.as_str()) {
        ("kustomize", "Kustomization") => {
            spec.insert("targetNamespace".into(), namespace.into());
            append_sequence(spec, "patches", shared_cluster_patches());
        }
        ("helm", "HelmRelease") => {
            spec.insert("targetNamespace".into(), namespace.into());
            spec.insert("storageNamespace".into(), namespace.into());
        }
        _ => {}
    }
}

/// Cluster-wide kinds a repository commonly applies, with their API version.
const CLUSTER_WIDE_KINDS: [(&str, &str); 13] = [
    ("CustomResourceDefinition", "apiextensions.k8s.io/v1"),
    ("ClusterRole", "rbac.authorization.k8s.io/v1"),
    ("ClusterRoleBinding", "rbac.authorization.k8s.io/v1"),
    ("ValidatingWebhookConfiguration", "admissionregistration.k8s.io/v1"),
    ("MutatingWebhookConfiguration", "admissionregistration.k8s.io/v1"),
    ("ValidatingAdmissionPolicy", "admissionregistration.k8s.io/v1"),
    ("ValidatingAdmissionPolicyBinding", "admissionregistration.k8s.io/v1"),
    ("PriorityClass", "scheduling.k8s.io/v1"),
    ("StorageClass", "storage.k8s.io/v1"),
    ("IngressClass", "networking.k8s.io/v1"),
    ("RuntimeClass", "node.k8s.io/v1"),
    ("APIService", "apiregistration.k8s.io/v1"),
    ("PersistentVolume", "v1"),
];

/// Patches for an environment in a shared cluster: no Namespace objects, and cluster-wide
/// objects marked so that Flux never prunes them (another environment may use them).
pub fn shared_cluster_patches() -> Vec<Value> {
    let mut patches = patches_by_kind(&["Namespace"], |_| {
        "$patch: delete\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: any\n".to_string()
    });
    let kinds: Vec<&str> = CLUSTER_WIDE_KINDS.iter().map(|(kind, _)| *kind).collect();
    patches.extend(patches_by_kind(&kinds, |kind| {
        let api_version = CLUSTER_WIDE_KINDS.iter().find(|(k, _)| *k == kind).map(|(_, v)| *v).unwrap_or("v1");
        format!(
            "apiVersion: {api_version}\nkind: {kind}\nmetadata:\n  name: any\n  annotations:\n    {PRUNE}: disabled\n"
        )
    }));
    patches
}

/// The annotation that keeps Flux from pruning an object.
pub const PRUNE: &str = "kustomize.toolkit.fluxcd.io/prune";

/// Whether a kind is one of `CLUSTER_WIDE_KINDS`, which a shared cluster's environments
/// leave in place.
pub fn is_cluster_wide(kind: &str) -> bool {
    CLUSTER_WIDE_KINDS.iter().any(|(k, _)| *k == kind)
}

/// Points a Kustomization at an artifact of its own when its source is the repository's own;
/// returns that artifact's source name.
fn repoint_source(spec: &mut Mapping, identity: &FluxObject, settings: &Settings) -> Option<String> {
    if !is_own_source(spec.get("sourceRef")?, &identity.namespace, settings) {
        return None;
    }
    let artifact = source_name(&identity.namespace, &identity.name, settings);
    spec.insert("sourceRef".into(), artifact_ref(&artifact, settings));
    Some(artifact)
}

/// A HelmRelease whose chart is a directory of the repository's own source, or a chart of
/// `charts:` asked of a HelmRepository re-pointed at the environment's registry, installs it
/// from the working tree instead: `spec.chart` becomes a `chartRef` to an OCIRepository
/// serving that directory packaged as a chart. HelmCharts cannot read OCIRepositories, and
/// a HelmChart never fetches a chart again under the same version (nor does helm-controller
/// upgrade to one), while helm-controller follows an OCIRepository's digest: so an edit of
/// the chart is installed even though its version stays the same.
fn repoint_chart(spec: &mut Mapping, identity: &FluxObject, settings: &Settings) -> Option<LocalChart> {
    let template = spec.get("chart")?.get("spec")?;
    let (path, version, relative_to) = chart_directory(template, &identity.namespace, settings)?;
    let mut values_files: Vec<String> = (template.get("valuesFiles").and_then(Value::as_sequence).into_iter())
        .flatten()
        .filter_map(Value::as_str)
        .map(|file| crate::flux::closure::normalise(&format!("{relative_to}{file}")))
        .collect();
    // source-controller reads a lone `values.yaml` as "the chart's own values".
    if values_files == [crate::flux::closure::normalise(&format!("{relative_to}values.yaml"))] {
        values_files.clear();
    }
    let ignore_missing_values_files =
        template.get("ignoreMissingValuesFiles").and_then(Value::as_bool).unwrap_or(false);
    let source = if values_files.is_empty() {
        chart_source_name(&path, settings)
    } else {
        // The same directory with other values is another chart.
        let values_key = format!("{}\n{ignore_missing_values_files}", values_files.join("\n"));
        chart_source_name(&format!("{path}/{}", short_hash(&values_key)), settings)
    };
    let chart = LocalChart { path, source, values_files, ignore_missing_values_files, version };
    spec.remove("chart");
    spec.insert("chartRef".into(), artifact_ref(&chart.source, settings));
    Some(chart)
}

/// The repository directory a HelmRelease's chart template reads, the version it asks for
/// (HelmRepository charts only) and what its `valuesFiles` are relative to.
fn chart_directory(template: &Value, namespace: &str, settings: &Settings) -> Option<(String, Option<String>, String)> {
    let source = template.get("sourceRef")?;
    let chart = template.get("chart")?.as_str()?;
    if is_own_source(source, namespace, settings) {
        return Some((crate::flux::closure::normalise(chart), None, String::new()));
    }
    let field = |name: &str| source.get(name).and_then(Value::as_str);
    if field("kind") != Some("HelmRepository") {
        return None;
    }
    let repository = format!("{}/{}", field("namespace").unwrap_or(namespace), field("name")?);
    let url = settings.helm_repositories.get(&repository)?.trim_end_matches('/');
    let published = settings.published_charts.iter().find(|p| p.url.trim_end_matches('/') == url && p.name == chart)?;
    let version = template.get("version").and_then(Value::as_str).map(str::to_string);
    Some((published.path.clone(), version, format!("{}/", published.path)))
}

/// Applies the first matching entry of the source-URL map to a source's `spec.url`.
fn map_source_url(spec: &mut Mapping, kind: &str, settings: &Settings) -> Option<String> {
    let url = spec.get("url").and_then(Value::as_str)?.to_string();
    let entry = settings.source_urls.iter().find(|entry| {
        let from = entry.url.trim_end_matches('/');
        url == from || url.starts_with(&format!("{from}/"))
    })?;
    let to = render_registry(entry.to.trim_end_matches('/'), &settings.registry);
    let mapped = format!("{to}{}", &url[entry.url.trim_end_matches('/').len()..]);
    spec.insert("url".into(), mapped.clone().into());
    let mut what = format!("url → {mapped}");
    // A HelmRepository's type follows its URL's scheme; source-controller rejects an
    // `oci://` URL on a `default` repository and an HTTP one on an `oci` repository.
    let is_oci = |url: &str| url.starts_with("oci://");
    if kind == "HelmRepository" && is_oci(&url) != is_oci(&mapped) {
        match is_oci(&mapped) {
            true => spec.insert("type".into(), "oci".into()),
            false => spec.remove("type"),
        };
        what.push_str(&format!(", type → {}", if is_oci(&mapped) { "oci" } else { "default" }));
    }
    // GitRepository has no `insecure`; plain HTTP is in its URL.
    if entry.insecure && kind != "GitRepository" {
        spec.insert("insecure".into(), true.into());
        what.push_str(" (insecure)");
    }
    if entry.drop_verify && spec.remove("verify").is_some() {
        what.push_str(", verify dropped");
    }
    Some(what)
}

/// Adds `{kind, name}` to `postBuild.substituteFrom` unless it is there already.
fn add_substitute_from(post_build: &mut Mapping, kind: &str, name: &str) -> bool {
    let list = post_build.entry("substituteFrom".into()).or_insert_with(|| Value::Sequence(Vec::new()));
    let Value::Sequence(list) = list else { return false };
    let present = list.iter().any(|e| {
        e.get("kind").and_then(Value::as_str) == Some(kind) && e.get("name").and_then(Value::as_str) == Some(name)
    });
    if !present {
        list.push(Value::Mapping(Mapping::from_iter([("kind".into(), kind.into()), ("name".into(), name.into())])));
    }
    !present
}

fn append_sequence(spec: &mut Mapping, key: &str, items: Vec<Value>) {
    match spec.entry(key.into()).or_insert_with(|| Value::Sequence(Vec::new())) {
        Value::Sequence(list) => list.extend(items),
        other => *other = Value::Sequence(items),
    }
}

/// Kustomize patches that delete every admission webhook configuration.
fn webhook_removal_patches() -> Vec<Value> {
    patches_by_kind(&["ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"], |kind| {
        format!("$patch: delete\napiVersion: admissionregistration.k8s.io/v1\nkind: {kind}\nmetadata:\n  name: any\n")
    })
}

/// Kustomize patches that set `spec.replicas` of every Deployment and StatefulSet.
fn replica_patches(max: u32) -> Vec<Value> {
    patches_by_kind(&["Deployment", "StatefulSet"], |_| format!("- op: add\n  path: /spec/replicas\n  value: {max}\n"))
}

/// One Kustomize patch per kind, targeting every object of that kind.
fn patches_by_kind(kinds: &[&str], patch: impl Fn(&str) -> String) -> Vec<Value> {
    kinds
        .iter()
        .map(|kind| {
            Value::Mapping(Mapping::from_iter([
                ("target".into(), Value::Mapping(Mapping::from_iter([("kind".into(), (*kind).into())]))),
                ("patch".into(), patch(kind).into()),
            ]))
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests;
