//! The Flux layer: the local overlay, packing the working tree, the `${VAR}` contract, and
//! the artifact Flux pulls.

pub mod artifact;
pub mod charts;
pub mod checks;
pub mod closure;
pub mod contract;
pub mod deploy;
pub mod diagnose;
pub mod disable;
pub mod documents;
pub mod files;
pub mod logs;
pub mod names;
pub mod overlay;
pub mod pack;
pub mod publish;
pub mod temp_paths;
pub mod wait;

use std::collections::BTreeSet;

use crate::config::Config;
use crate::envmap::{self, EnvMap};
use crate::providers::Capabilities;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("devenv.yaml: flux.source `{0}` is not of the form `Kind/name`")]
    SourceRef(String),
    #[error(transparent)]
    Pack(#[from] pack::Error),
    #[error("{count} substitution variable(s) have no value:\n{details}")]
    Contract { count: usize, details: String },
    /// What Flux would fail on, found in the user's files; `id` is the first problem's.
    #[error("{count} problem(s) Flux would fail on, found before anything is pushed:\n{details}")]
    Checks { id: &'static str, count: usize, details: String },
    #[error(transparent)]
    Chart(#[from] charts::Error),
    #[error(transparent)]
    Deploy(Box<deploy::Error>),
}

impl From<deploy::Error> for Error {
    fn from(error: deploy::Error) -> Self {
        Error::Deploy(Box::new(error))
    }
}

pub use names::REGISTRY_PLACEHOLDER;

/// What `up` will hand to Flux: the packed, rewritten tree and the contract check.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub packed: pack::Packed,
    pub contract: contract::Report,
    /// What Flux would fail on or get wrong, with the user's file:line.
    pub findings: Vec<checks::Finding>,
}

impl Prepared {
    /// Warnings about the tree that do not stop `up`: manifests left out as symbolic links.
    pub fn warnings(&self) -> Vec<String> {
        (self.packed.linked_manifests.iter())
            .map(|path| {
                format!(
                    "`{path}` is a symbolic link, so it is not packed: Flux's artifacts hold files only (a copy, or the file itself, is)"
                )
            })
            .collect()
    }
}

/// The overlay settings from devenv.yaml; `registry` is the environment's registry as the
/// cluster reaches it, `cluster` what the cluster can do (where pods do not run, admission
/// webhooks are dropped: nothing would serve them). Reads the Chart.yaml of each chart to
/// publish.
pub fn settings(config: &Config, registry: &str, cluster: Capabilities) -> Result<overlay::Settings, Error> {
    let flux = &config.project.flux;
    let own_source = overlay::SourceRef::parse(&flux.source).ok_or_else(|| Error::SourceRef(flux.source.clone()))?;
    let mut published_charts = Vec::new();
    for chart in &config.project.charts {
        let metadata = charts::metadata_of(&config.repo, &chart.path)?;
        let url = format!("oci://{registry}/{}", chart.repository.trim_matches('/'));
        published_charts.push(overlay::PublishedChart { url, name: metadata.name, path: chart.path.clone() });
    }
    Ok(overlay::Settings {
        flux_namespace: flux.namespace.clone(),
        relocate_to: config.environment_namespace(),
        service_account: config.flux_service_account().map(str::to_string),
        own_source,
        config_map: config.project.environment.config_map.name.clone(),
        secret: envmap::secret_name(config),
        disable: config.project.overlay.disable.clone(),
        max_replicas: config.project.overlay.max_replicas,
        patches: config.project.overlay.patches.clone(),
        source_urls: (config.project.overlay.sources.iter())
            .map(|s| overlay::SourceUrl {
                url: s.url.clone(),
                to: s.to.clone(),
                insecure: s.insecure,
                drop_verify: s.drop_verify,
            })
            .collect(),
        registry: registry.to_string(),
        drop_webhooks: !cluster.runs_pods,
        clashing: Default::default(),
        published_charts,
        helm_repositories: Default::default(),
        deletions: Default::default(),
    })
}

/// Packs the working tree with the overlay; `registry` fills `{{ registry }}`. Reads files only.
pub fn pack(config: &Config, registry: &str, cluster: Capabilities) -> Result<pack::Packed, Error> {
    let settings = settings(config, registry, cluster)?;
    Ok(pack::pack(&config.repo, &config.project.flux.path, names::ROOT_NAME, &settings)?)
}

/// Packs the working tree with the overlay and checks the substitution contract against
/// the keys the environment provides (which do not depend on generated values). Reads files
/// only; before the cluster exists, `registry` is `REGISTRY_PLACEHOLDER`.
pub fn prepare(config: &Config, env: &EnvMap, registry: &str, cluster: Capabilities) -> Result<Prepared, Error> {
    let packed = pack(config, registry, cluster).map_err(unparsable_flux_file)?;
    let visible = BTreeSet::from([config.project.environment.config_map.name.clone(), envmap::secret_name(config)]);
    let scopes = contract::scopes(&packed.objects, &visible, &packed.sources());
    let contract = contract::check(&packed.texts, &packed.paths, &scopes, &envmap::keys(env));
    let findings = run_checks(config, env, &packed);
    Ok(Prepared { packed, contract, findings })
}

/// Every check of `checks` on the packed tree, errors first.
fn run_checks(config: &Config, env: &EnvMap, packed: &pack::Packed) -> Vec<checks::Finding> {
    let flux_namespace = &config.project.flux.namespace;
    let appliers = checks::appliers(packed, flux_namespace);
    let provided = provided_values(config, env);
    // The Flux objects of the reached files as written, the disabled ones included.
    let flux_objects: BTreeSet<String> = (packed.origins.keys().cloned())
        .chain(packed.diffs.iter().filter(|(_, d)| d.after.is_none()).map(|(_, d)| d.object.clone()))
        .collect();
    // devenv's own root is not the user's: what only it applies cannot be patched away.
    let root = format!("Kustomization/{}/{}", config.flux_namespace(), names::ROOT_NAME);
    let applying: Vec<checks::Applier> = appliers.iter().filter(|a| a.key != root).cloned().collect();
    let applied = checks::disable::applied_objects(&packed.texts, &applying);
    let mut findings = checks::build::check(&config.repo, &packed.texts, &packed.paths, &appliers);
    findings.extend(checks::disable::check(
        &config.project.overlay.disable,
        &config.project_text,
        &flux_objects,
        &applied,
    ));
    findings.extend(checks::string_fields::check(&packed.texts, &appliers, &provided));
    findings.extend(checks::unsubstituted::check(&packed.texts, &appliers));
    findings.extend(checks::overrides::check(&packed.texts, &appliers, &provided));
    findings.sort_by_key(|f| f.severity);
    findings
}

/// The values devenv provides, each with where it comes from: a service's output mapped
/// under `keys:` wins over the profile's static key of the same name, as in the ConfigMap.
fn provided_values(config: &Config, env: &EnvMap) -> std::collections::BTreeMap<String, checks::Provided> {
    let mut provided = std::collections::BTreeMap::new();
    for (key, value) in env.config_map.iter().chain(env.secret.iter()) {
        let from_service = config.services.iter().find_map(|s| s.keys.get(key).map(|output| (s, output)));
        let origin = match from_service {
            Some((service, output)) => format!("service `{}`'s output `{output}`", service.name),
            None => format!("the profile `{}`'s `environment`", config.profile_name),
        };
        let secret = env.secret.contains_key(key);
        provided.insert(key.clone(), checks::Provided { value: value.clone(), origin, secret });
    }
    provided
}

/// A Flux object's file that is not YAML stops the overlay; said at its line and column.
fn unparsable_flux_file(error: Error) -> Error {
    let Error::Pack(pack::Error::Overlay { path, source: overlay::Error::Parse { source, .. } }) = &error else {
        return error;
    };
    let position = source.location().map(|l| (l.line(), l.column()));
    let mut message = source.to_string();
    if let Some(at) = message.find(" at line ") {
        message.truncate(at);
    }
    let finding = checks::Finding::new(checks::Kind::Unbuildable, path, position, format!("not valid YAML: {message}"))
        .with_fix("fix the YAML at that place; kustomize would stop the whole Kustomization on it");
    Error::Checks { id: "DEV069", count: 1, details: checks::render(&[finding]).trim_end().to_string() }
}

impl Prepared {
    /// Fails when a variable has no value and no default.
    pub fn check_contract(&self) -> Result<(), Error> {
        if self.contract.missing.is_empty() {
            return Ok(());
        }
        let only_missing = contract::Report { missing: self.contract.missing.clone(), ..Default::default() };
        let details = contract::render(&only_missing).trim_end().to_string();
        Err(Error::Contract { count: self.contract.missing.len(), details })
    }

    /// Fails on the findings Flux would fail on, with the id of the first.
    pub fn check_findings(&self) -> Result<(), Error> {
        let errors: Vec<checks::Finding> =
            self.findings.iter().filter(|f| f.severity == checks::Severity::Error).cloned().collect();
        let Some(id) = errors.first().and_then(|f| f.id) else { return Ok(()) };
        Err(Error::Checks { id, count: errors.len(), details: checks::render(&errors).trim_end().to_string() })
    }
}

#[cfg(test)]
mod layers {
    //! The modules of the Flux layer in layers, lowest first: a module names only modules
    //! before it in this order, so the layer is acyclic and lower layers never use higher ones.
    //! `mod.rs` (the facade: `settings`, `pack`, `prepare`, `Error`) and `diagnose.rs` (the ids
    //! and hints of its errors) sit above them all.

    use std::collections::BTreeSet;
    use std::path::Path;

    const LAYERS: &[(&str, &[&str])] = &[
        // Names, paths, files and archives; the OCI push.
        ("leaf", &["names", "closure", "temp_paths", "documents", "files", "artifact"]),
        // No IO to the cluster or the registry.
        ("pure", &["overlay", "contract", "charts", "disable", "pack", "checks"]),
        // Reads the cluster: readiness, controllers' logs.
        ("watch", &["wait", "logs"]),
        // Writes to the registry and the cluster; `deploy::up` orchestrates the watch.
        ("apply", &["publish", "deploy"]),
    ];
    /// Modules above every layer, which may name any module.
    const ABOVE: &[&str] = &["mod", "diagnose"];

    fn order() -> Vec<&'static str> {
        LAYERS.iter().flat_map(|(_, modules)| modules.iter().copied()).collect()
    }

    fn layer_of(module: &str) -> &'static str {
        LAYERS.iter().find(|(_, modules)| modules.contains(&module)).map(|(layer, _)| *layer).unwrap_or("above")
    }

    /// The Flux modules a source file names: `crate::flux::NAME`, `flux::NAME`, and
    /// `super::NAME` from a file of the module itself (`super::super::NAME` one level down),
    /// with `{a, b::c}` groups. Comment lines are left out.
    pub(super) fn named(text: &str, depth: usize, modules: &BTreeSet<&str>) -> BTreeSet<String> {
        let code: String =
            text.lines().filter(|l| !l.trim_start().starts_with("//")).map(|l| format!("{l}\n")).collect();
        let mut found = BTreeSet::new();
        let super_prefix = "super::".repeat(depth);
        let mut markers = vec!["flux::".to_string()];
        if depth > 0 {
            markers.push(super_prefix.clone());
        }
        for marker in &markers {
            for (at, _) in code.match_indices(marker.as_str()) {
                let before = code[..at].chars().next_back();
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    continue;
                }
                // `super::` of a deeper file is its own module, not the Flux layer.
                if marker.starts_with("super") && code[at + marker.len()..].starts_with("super::") {
                    continue;
                }
                let rest = &code[at + marker.len()..];
                let items: Vec<&str> = match rest.strip_prefix('{') {
                    Some(group) => {
                        let mut level = 1;
                        let end = group
                            .char_indices()
                            .find(|&(_, c)| {
                                level += match c {
                                    '{' => 1,
                                    '}' => -1,
                                    _ => 0,
                                };
                                level == 0
                            })
                            .map_or(group.len(), |(i, _)| i);
                        top_level_items(&group[..end])
                    }
                    None => vec![rest],
                };
                for item in items {
                    let name: String =
                        item.trim_start().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                    if modules.contains(name.as_str()) {
                        found.insert(name);
                    }
                }
            }
        }
        found
    }

    fn top_level_items(group: &str) -> Vec<&str> {
        let (mut items, mut level, mut start) = (Vec::new(), 0, 0);
        for (i, c) in group.char_indices() {
            match c {
                '{' => level += 1,
                '}' => level -= 1,
                ',' if level == 0 => {
                    items.push(&group[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        items.push(&group[start..]);
        items
    }

    /// Every `.rs` file under `dir`, with its path relative to `dir`.
    fn sources(dir: &Path, relative: &str, out: &mut Vec<(String, String)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for path in entries {
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            let relative = if relative.is_empty() { name } else { format!("{relative}/{name}") };
            if path.is_dir() {
                sources(&path, &relative, out);
            } else if relative.ends_with(".rs") {
                out.push((relative, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }

    #[test]
    fn lower_layers_never_name_higher_ones() {
        let order = order();
        let modules: BTreeSet<&str> = order.iter().copied().chain(ABOVE.iter().copied()).collect();
        let mut files = Vec::new();
        sources(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src/flux"), "", &mut files);
        let mut problems = Vec::new();
        for (file, text) in &files {
            let parts: Vec<&str> = file.trim_end_matches(".rs").split('/').collect();
            let module = parts[0];
            // `checks/mod.rs` is `checks` itself; `checks/build.rs` one level below it.
            let depth = if parts.len() == 1 || parts.last() == Some(&"mod") { 1 } else { parts.len() };
            if !modules.contains(module) {
                problems.push(format!("{file}: module `{module}` is in no layer; add it to LAYERS"));
                continue;
            }
            let Some(rank) = order.iter().position(|m| *m == module) else { continue };
            for used in named(text, depth, &modules) {
                let allowed = used == module || order.iter().position(|m| *m == used).is_some_and(|r| r < rank);
                if !allowed {
                    problems.push(format!(
                        "{file}: `{module}` ({}) names `{used}` ({}), which comes after it",
                        layer_of(module),
                        layer_of(&used)
                    ));
                }
            }
        }
        assert!(problems.is_empty(), "the Flux layer's modules name higher ones:\n{}", problems.join("\n"));
    }

    #[test]
    fn the_check_sees_every_way_of_naming_a_module() {
        let modules: BTreeSet<&str> = ["deploy", "wait", "pack", "names", "mod"].into_iter().collect();
        let text = "use super::deploy::Error;\nuse super::{names, wait::{self, X}};\nlet d = crate::flux::pack::digest(b\"\");\n// super::mod in a comment\nuse super::super::checks;\n";
        let found: Vec<String> = named(text, 1, &modules).into_iter().collect();
        assert_eq!(found, ["deploy", "names", "pack", "wait"]);
        // One level down, `super::` is the file's own module.
        let found: Vec<String> =
            named("use super::wait;\nuse super::super::deploy;\n", 2, &modules).into_iter().collect();
        assert_eq!(found, ["deploy"]);
    }
}
