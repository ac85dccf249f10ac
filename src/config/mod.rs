//! Configuration: `devenv.yaml`, profiles and the substitute catalogue, loaded and validated
//! before anything else happens. Every error names the file, line, column and field.

pub mod catalogue;
pub mod declared;
pub mod locate;
pub mod profile;
pub mod project;
mod support;
pub mod template;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::naming;
pub use catalogue::Substitute;
pub use locate::{Locator, Position};
pub use profile::Profile;
pub use project::ProjectFile;

pub const PROJECT_FILE: &str = "devenv.yaml";
/// Profile used when neither `--profile` nor `defaultProfile` names one.
pub const DEFAULT_PROFILE: &str = "local";

mod builtin {
    include!(concat!(env!("OUT_DIR"), "/builtin.rs"));
}

/// The profiles every repository has.
pub fn builtin_profiles() -> impl Iterator<Item = &'static str> {
    builtin::PROFILES.iter().map(|(name, _)| *name)
}

/// Where in which file a problem is.
#[derive(Debug, Clone, Serialize)]
pub struct Location {
    pub file: String,
    pub position: Option<Position>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some(p) => write!(f, "{}:{}:{}", self.file, p.line, p.column),
            None => write!(f, "{}", self.file),
        }
    }
}

/// The kind of a configuration problem; each has its own error id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Problem {
    Syntax,
    UnknownKind,
    UnknownProfile,
    InvalidName,
    Duplicate,
    UnknownOutput,
    UnknownVersion,
    UnknownParam,
    Invalid,
    /// A field the profile's provider does not use (yet).
    Unsupported,
    /// A secret or parameter without exactly one source of its value.
    ResourceValue,
    /// A `${SERVICE.OUTPUT}` reference (or `rds:`) to a service or output that is not there.
    UnknownReference,
    /// `rds:` names a service that is not a database.
    NotADatabase,
    /// A secret or parameter name that AWS would refuse.
    ResourceName,
    /// A field of a resource that its kind does not take.
    NotApplicable,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no {PROJECT_FILE} in `{}` or any directory above it", start.display())]
    ProjectNotFound { start: PathBuf },
    #[error("cannot read `{}`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{at}: {field}{sep}{message}", sep = if field.is_empty() { "" } else { ": " })]
    Invalid { problem: Problem, at: Location, field: String, message: String, hint: Option<String> },
}

/// A configuration file's name (as shown to the user) and text.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub name: String,
    pub text: String,
}

impl SourceFile {
    fn read(repo: &Path, relative: &str) -> Result<Self, Error> {
        let path = repo.join(relative);
        let text = fs::read_to_string(&path).map_err(|source| Error::Read { path, source })?;
        Ok(SourceFile { name: relative.to_string(), text })
    }
}

/// One managed service of the environment, with its catalogue entry resolved.
#[derive(Debug, Clone, Serialize)]
pub struct Service {
    pub name: String,
    pub kind: String,
    pub version: String,
    pub image: String,
    /// Host port pinned in devenv.yaml for the main port.
    pub port: Option<u16>,
    /// Catalogue parameter defaults overlaid with the service's own values.
    pub params: BTreeMap<String, String>,
    /// Resources (buckets, queues, secrets …) created in the substitute once it is ready, by
    /// name.
    pub resources: Vec<String>,
    /// The secrets and parameters among them, declared with their values, by name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub declared: BTreeMap<String, project::DeclaredResource>,
    /// ConfigMap key → output name.
    pub keys: BTreeMap<String, String>,
    pub substitute: Substitute,
}

/// Everything a command needs to know, validated.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub repo: PathBuf,
    pub env: String,
    pub profile_name: String,
    pub project: ProjectFile,
    pub profile: Profile,
    pub services: Vec<Service>,
    /// The kubeconfig context: `--context`, else the profile's `cluster.context`.
    pub context: Option<String>,
    /// devenv.yaml as loaded, to point at a field of it in later findings.
    pub project_text: String,
}

impl Config {
    /// The environment's own namespace when it shares its cluster (`isolation: namespace`,
    /// the default of the `existing` provider): `cluster.namespace`, else `devenv-<env>`.
    pub fn environment_namespace(&self) -> Option<String> {
        let cluster = &self.profile.cluster;
        let default = match cluster.provider {
            profile::Provider::Existing | profile::Provider::EksNamespace => profile::Isolation::Namespace,
            _ => profile::Isolation::Cluster,
        };
        (cluster.isolation.unwrap_or(default) == profile::Isolation::Namespace)
            .then(|| cluster.namespace.clone().unwrap_or_else(|| naming::env_scoped(&self.env)))
    }

    /// The name of the cluster devenv makes (kind, k3d): the profile's `cluster.name`, else
    /// `devenv-<env>`.
    pub fn cluster_name(&self) -> String {
        self.profile.cluster.name.clone().unwrap_or_else(|| naming::env_scoped(&self.env))
    }

    /// Where the environment's Flux objects, and devenv's own beside them, live: its
    /// namespace, or the repository's Flux namespace when it has the cluster to itself.
    pub fn flux_namespace(&self) -> String {
        self.environment_namespace().unwrap_or_else(|| self.project.flux.namespace.clone())
    }

    /// The ServiceAccount every Flux object of the environment acts as
    /// (`spec.serviceAccountName`), so its manifests can change nothing outside its
    /// namespace: the preview's own, for a pull request's preview.
    pub fn flux_service_account(&self) -> Option<&'static str> {
        (self.profile.cluster.provider == profile::Provider::EksNamespace).then_some(crate::preview::SERVICE_ACCOUNT)
    }
}

/// What the user chose on the command line.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub repo: Option<PathBuf>,
    pub profile: Option<String>,
    pub env: Option<String>,
    /// `--context`: the kubeconfig context of an `existing` cluster.
    pub context: Option<String>,
}

/// The repository root: `--repo`, or the nearest directory at or above `start` holding
/// devenv.yaml.
pub fn find_repo(explicit: Option<&Path>, start: &Path) -> Result<PathBuf, Error> {
    if let Some(dir) = explicit {
        let file = dir.join(PROJECT_FILE);
        return match fs::metadata(&file) {
            Ok(_) => Ok(dir.to_path_buf()),
            Err(source) => Err(Error::Read { path: file, source }),
        };
    }
    start
        .ancestors()
        .find(|dir| dir.join(PROJECT_FILE).is_file())
        .map(Path::to_path_buf)
        .ok_or_else(|| Error::ProjectNotFound { start: start.to_path_buf() })
}

/// Loads and validates the project, the selected profile and the catalogue.
pub fn load(selection: &Selection, cwd: &Path) -> Result<Config, Error> {
    let repo = find_repo(selection.repo.as_deref(), cwd)?;
    let project_source = SourceFile::read(&repo, PROJECT_FILE)?;
    let project: ProjectFile = parse_layers(std::slice::from_ref(&project_source))?;
    let project_locator = Locator::new(&project_source.text);
    let at = |field: &str| Location { file: PROJECT_FILE.to_string(), position: project_locator.find(field) };

    check_name(&project.project, "project", &at, naming::MAX_ENV_LEN)?;
    let env = match &selection.env {
        Some(env) => {
            let cli = |_: &str| Location { file: "--env".to_string(), position: None };
            check_name(env, "", &cli, naming::MAX_ENV_LEN)?;
            env.clone()
        }
        None => project.project.clone(),
    };

    // Only the profile in use is parsed: a broken one breaks only the commands that use it.
    let profiles = catalogue_layers(&repo, "profiles", builtin::PROFILES)?;
    let profile_name = selection
        .profile
        .clone()
        .or_else(|| project.default_profile.clone())
        .unwrap_or_else(|| DEFAULT_PROFILE.to_string());
    let Some(profile) = profiles.get(&profile_name).map(|files| parse_entry::<Profile>(files)).transpose()? else {
        let known: Vec<&str> = profiles.keys().map(String::as_str).collect();
        let (file, position) = match &selection.profile {
            Some(_) => ("--profile".to_string(), None),
            None => (PROJECT_FILE.to_string(), project_locator.find("defaultProfile")),
        };
        return Err(Error::Invalid {
            problem: Problem::UnknownProfile,
            at: Location { file, position },
            field: String::new(),
            message: format!("unknown profile `{profile_name}`"),
            hint: Some(known_list("profiles", &known, &profile_name)),
        });
    };

    let catalogue = load_catalogue::<Substitute>(&repo, "substitutes", builtin::SUBSTITUTES)?;
    let services = resolve_services(&project, &profile, &catalogue, &env, &at)?;
    declared::check(&services, &at)?;
    check_kubernetes_names(&project, &at)?;
    check_sources(&project, &at)?;
    check_charts(&project, &repo, &at)?;
    support::check_supported(&repo, &profile_name, &profile, selection.context.as_deref())?;
    let context = selection.context.clone().or_else(|| profile.cluster.context.clone());
    let project_text = project_source.text;
    Ok(Config { repo, env, profile_name, project, profile, services, context, project_text })
}

fn resolve_services(
    project: &ProjectFile,
    profile: &Profile,
    catalogue: &BTreeMap<String, Substitute>,
    env: &str,
    at: &dyn Fn(&str) -> Location,
) -> Result<Vec<Service>, Error> {
    let invalid = |problem, field: String, message: String, hint: Option<String>| Error::Invalid {
        problem,
        at: at(&field),
        field,
        message,
        hint,
    };
    let mut names = BTreeSet::new();
    // ConfigMap key → where it is first defined, to report clashes.
    let mut key_owners: BTreeMap<&str, String> =
        profile.environment.keys().map(|k| (k.as_str(), "the profile's `environment`".to_string())).collect();
    let mut services = Vec::new();
    for (i, service) in project.services.iter().enumerate() {
        let field = |name: &str| format!("services[{i}].{name}");
        check_name(&service.name, &field("name"), at, naming::MAX_SERVICE_LEN)?;
        let container = naming::container_name(env, &service.name);
        if container.len() > naming::MAX_OBJECT_LEN {
            return Err(invalid(
                Problem::InvalidName,
                field("name"),
                format!("container name `{container}` is longer than {} characters", naming::MAX_OBJECT_LEN),
                Some("shorten the service name or the environment name (--env)".to_string()),
            ));
        }
        if service.port == Some(0) {
            return Err(invalid(
                Problem::Invalid,
                field("port"),
                "port 0 is not a port devenv can publish on".to_string(),
                Some(
                    "give a port from 1 to 65535, or leave `port` out for a free one chosen once and remembered"
                        .to_string(),
                ),
            ));
        }
        if !names.insert(service.name.as_str()) {
            return Err(invalid(
                Problem::Duplicate,
                field("name"),
                format!("service `{}` is defined twice", service.name),
                Some("give each service its own name".to_string()),
            ));
        }
        let Some(substitute) = catalogue.get(&service.kind) else {
            let known: Vec<&str> = catalogue.keys().map(String::as_str).collect();
            return Err(invalid(
                Problem::UnknownKind,
                field("kind"),
                format!("unknown substitute kind `{}`", service.kind),
                Some(known_list("kinds", &known, &service.kind)),
            ));
        };
        let version = service.version.clone().unwrap_or_else(|| substitute.versions.default.clone());
        let Some(tag) = substitute.versions.tags.get(&version) else {
            let known: Vec<&str> = substitute.versions.tags.keys().map(String::as_str).collect();
            return Err(invalid(
                Problem::UnknownVersion,
                field("version"),
                format!("`{}` has no version `{version}`", service.kind),
                Some(known_list("versions", &known, &version)),
            ));
        };
        for name in service.params.keys() {
            if !substitute.params.contains_key(name) {
                let known: Vec<&str> = substitute.params.keys().map(String::as_str).collect();
                return Err(invalid(
                    Problem::UnknownParam,
                    format!("services[{i}].params.{name}"),
                    format!("`{}` has no parameter `{name}`", service.kind),
                    Some(known_list("parameters", &known, name)),
                ));
            }
        }
        check_resources(service, catalogue, i, at)?;
        let resource_names: Vec<String> = service.resources.iter().map(|r| r.name().to_string()).collect();
        let outputs = output_names(substitute, &resource_names);
        for (key, output) in &service.keys {
            let key_field = format!("services[{i}].keys.{key}");
            if !naming::is_variable_name(key) {
                return Err(invalid(
                    Problem::Invalid,
                    key_field,
                    format!("`{key}` is not a valid variable name"),
                    Some("use letters, digits and `_`, not starting with a digit (e.g. `DB_HOST`)".to_string()),
                ));
            }
            if !outputs.contains(output) {
                let known: Vec<&str> = outputs.iter().map(String::as_str).collect();
                return Err(invalid(
                    Problem::UnknownOutput,
                    key_field,
                    format!("`{}` has no output `{output}`", service.kind),
                    Some(known_list("outputs", &known, output)),
                ));
            }
            if let Some(owner) = key_owners.insert(key, format!("service `{}`", service.name)) {
                return Err(invalid(
                    Problem::Duplicate,
                    key_field,
                    format!("key `{key}` is already filled by {owner}"),
                    Some("each ConfigMap key gets its value from one place".to_string()),
                ));
            }
        }
        let image = if naming::image_has_tag(&substitute.image) {
            substitute.image.clone()
        } else {
            format!("{}:{tag}", substitute.image)
        };
        let mut params = substitute.params.clone();
        params.extend(service.params.clone());
        services.push(Service {
            name: service.name.clone(),
            kind: service.kind.clone(),
            version,
            image,
            port: service.port,
            params,
            resources: resource_names,
            declared: (service.resources.iter())
                .filter_map(|r| match r {
                    project::ResourceConfig::Declared(d) => Some((d.name.clone(), d.clone())),
                    project::ResourceConfig::Name(_) => None,
                })
                .collect(),
            keys: service.keys.clone(),
            substitute: substitute.clone(),
        });
    }
    Ok(services)
}

/// The namespaces and object names devenv creates in the cluster must be valid there, or
/// the first apply would fail halfway through `up`.
fn check_kubernetes_names(project: &ProjectFile, at: &dyn Fn(&str) -> Location) -> Result<(), Error> {
    let environment = &project.environment;
    let mut namespaces = vec![("flux.namespace", Some(&project.flux.namespace))];
    namespaces.push(("environment.configMap.namespace", environment.config_map.namespace.as_ref()));
    let mut names = vec![("environment.configMap.name", &environment.config_map.name)];
    if let Some(secret) = &environment.secret {
        namespaces.push(("environment.secret.namespace", secret.namespace.as_ref()));
        names.push(("environment.secret.name", &secret.name));
    }
    for (field, namespace) in namespaces {
        if let Some(namespace) = namespace {
            check_name(namespace, field, at, naming::MAX_OBJECT_LEN)?;
        }
    }
    for (field, name) in names {
        // Object names are DNS subdomains: labels joined by dots.
        for part in name.split('.') {
            check_name(part, field, at, naming::MAX_OBJECT_LEN).map_err(|error| match error {
                Error::Invalid { problem, at, field, hint, .. } => Error::Invalid {
                    problem,
                    at,
                    field,
                    message: format!("`{name}` is not a Kubernetes object name"),
                    hint,
                },
                other => other,
            })?;
        }
    }
    Ok(())
}

/// `flux.source` is `Kind/name`; `overlay.sources`: each entry maps a URL to a URL, with
/// `{{ registry }}` the only template.
fn check_sources(project: &ProjectFile, at: &dyn Fn(&str) -> Location) -> Result<(), Error> {
    let own = &project.flux.source;
    if crate::flux::overlay::SourceRef::parse(own).is_none() {
        return Err(Error::Invalid {
            problem: Problem::Invalid,
            at: at("flux.source"),
            field: "flux.source".to_string(),
            message: format!("`{own}` is not of the form `Kind/name`"),
            hint: Some("write it like `GitRepository/flux-system`".to_string()),
        });
    }
    for (i, source) in project.overlay.sources.iter().enumerate() {
        for (name, value) in [("url", &source.url), ("to", &source.to)] {
            let field = format!("overlay.sources[{i}].{name}");
            let rest = crate::flux::overlay::render_registry(value, "registry.invalid");
            let problem = if !value.contains("://") {
                Some(format!("`{value}` is not a URL"))
            } else if rest.contains("{{") {
                Some(format!("`{value}` uses a template other than `{{{{ registry }}}}`"))
            } else {
                None
            };
            if let Some(message) = problem {
                return Err(Error::Invalid {
                    problem: Problem::Invalid,
                    at: at(&field),
                    field,
                    message,
                    hint: Some(
                        "write a full URL, e.g. `oci://ghcr.io/acme/charts` or `oci://{{ registry }}/charts`"
                            .to_string(),
                    ),
                });
            }
        }
    }
    Ok(())
}

const REGISTRY_PATH_HINT: &str =
    "use lowercase letters and digits, separated by `/`, `.`, `_` or `-` (e.g. `charts/platform`)";

/// `charts`: each path is a chart directory with a readable Chart.yaml.
fn check_charts(project: &ProjectFile, repo: &Path, at: &dyn Fn(&str) -> Location) -> Result<(), Error> {
    let mut seen = BTreeSet::new();
    for (i, chart) in project.charts.iter().enumerate() {
        let field = format!("charts[{i}].path");
        let invalid = |problem, message: String, hint: &str| Error::Invalid {
            problem,
            at: at(&field),
            field: field.clone(),
            message,
            hint: Some(hint.to_string()),
        };
        let metadata = crate::flux::charts::metadata(&repo.join(&chart.path)).map_err(|reason| {
            invalid(
                Problem::Invalid,
                format!("`{}` is not a Helm chart: {reason}", chart.path),
                "give the chart's directory relative to the repository root; its Chart.yaml needs `name` and `version`",
            )
        })?;
        // Both become the path of the chart in the registry, which takes lowercase names only.
        let repository_field = format!("charts[{i}].repository");
        let repository = chart.repository.trim_matches('/');
        if repository.is_empty() || !repository.split('/').all(crate::flux::artifact::is_path_component) {
            return Err(Error::Invalid {
                problem: Problem::Invalid,
                at: at(&repository_field),
                field: repository_field,
                message: format!("`{}` is not a registry repository path", chart.repository),
                hint: Some(REGISTRY_PATH_HINT.to_string()),
            });
        }
        if !crate::flux::artifact::is_path_component(&metadata.name) {
            return Err(invalid(
                Problem::Invalid,
                format!("the chart's name `{}` (its Chart.yaml) cannot be a path in the registry", metadata.name),
                REGISTRY_PATH_HINT,
            ));
        }
        if !seen.insert((chart.repository.clone(), metadata.name.clone())) {
            return Err(invalid(
                Problem::Duplicate,
                format!("chart `{}` is listed twice for repository `{}`", metadata.name, chart.repository),
                "list each chart once",
            ));
        }
    }
    Ok(())
}

/// A service's `resources:`: allowed by its kind, well named, each listed once.
fn check_resources(
    service: &project::ServiceConfig,
    catalogue: &BTreeMap<String, Substitute>,
    index: usize,
    at: &dyn Fn(&str) -> Location,
) -> Result<(), Error> {
    if service.resources.is_empty() {
        return Ok(());
    }
    let substitute = &catalogue[&service.kind];
    let invalid = |problem, field: String, message: String, hint: String| Error::Invalid {
        problem,
        at: at(&field),
        field,
        message,
        hint: Some(hint),
    };
    let Some(resources) = &substitute.resources else {
        let with: Vec<String> = catalogue
            .iter()
            .filter_map(|(kind, entry)| entry.resources.as_ref().map(|r| format!("`{kind}` ({}s)", r.create.noun())))
            .collect();
        return Err(invalid(
            Problem::Invalid,
            format!("services[{index}].resources"),
            format!("`{}` has no resources to create", service.kind),
            format!("remove `resources:`; kinds that create resources: {}", with.join(", ")),
        ));
    };
    let noun = resources.create.noun();
    let mut seen = BTreeSet::new();
    for (j, entry) in service.resources.iter().enumerate() {
        let field = format!("services[{index}].resources[{j}]");
        let name = entry.name();
        let with_value = resources.create.has_value();
        if let Err(reason) = resources.create.check_name(name) {
            return Err(invalid(
                if with_value { Problem::ResourceName } else { Problem::Invalid },
                if matches!(entry, project::ResourceConfig::Declared(_)) { format!("{field}.name") } else { field },
                format!("{noun} name `{name}` {reason}"),
                resources.create.naming_hint().to_string(),
            ));
        }
        if !seen.insert(name) {
            return Err(invalid(
                Problem::Duplicate,
                field,
                format!("{noun} `{name}` is listed twice"),
                format!("list each {noun} once"),
            ));
        }
        declared::check_entry(entry, &service.kind, &resources.create, &field, at)?;
    }
    Ok(())
}

/// The outputs a service offers: its kind's, and `<resource>.<output>` for each of its
/// resources.
pub fn output_names(substitute: &Substitute, resources: &[String]) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = substitute.outputs.keys().cloned().collect();
    if let Some(per_resource) = &substitute.resources {
        for resource in resources {
            names.extend(per_resource.outputs.keys().map(|output| format!("{resource}.{output}")));
        }
    }
    names
}

fn check_name(value: &str, field: &str, at: &dyn Fn(&str) -> Location, max: usize) -> Result<(), Error> {
    match naming::check_label(value, max) {
        Ok(()) => Ok(()),
        Err(reason) => Err(Error::Invalid {
            problem: Problem::InvalidName,
            at: at(field),
            field: field.to_string(),
            message: format!("`{value}` {reason}"),
            hint: Some(format!(
                "use lowercase letters, digits and `-`, starting and ending with a letter or digit, at most {max} characters (e.g. `{}`)",
                naming::sanitize(value, max)
            )),
        }),
    }
}

/// "known kinds: a, b; did you mean `c`?"
fn known_list(what: &str, known: &[&str], given: &str) -> String {
    let mut hint = format!("known {what}: {}", known.join(", "));
    if let Some(best) = suggest(given, known) {
        hint.push_str(&format!("; did you mean `{best}`?"));
    }
    hint
}

/// The closest candidate to a mistyped word, if one is close enough to be a typo: among the
/// similar ones, the fewest edits away (`resourse` → `resource`, not `resources`).
pub fn suggest<'a>(given: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(given, c), strsim::levenshtein(given, c), *c))
        .filter(|(score, ..)| *score >= 0.85)
        .max_by(|a, b| b.1.cmp(&a.1).then(a.0.total_cmp(&b.0)))
        .map(|(.., c)| c)
}

/// Loads `<dir>/*.yaml` entries: built-in ones, then `.devenv/<dir>/*.yaml` from the repo,
/// whose top-level fields replace the built-in entry's of the same name or add a new entry.
fn load_catalogue<T: DeserializeOwned + Validate>(
    repo: &Path,
    dir: &str,
    builtin: &[(&str, &str)],
) -> Result<BTreeMap<String, T>, Error> {
    let mut entries = BTreeMap::new();
    for (name, files) in catalogue_layers(repo, dir, builtin)? {
        entries.insert(name, parse_entry(&files)?);
    }
    Ok(entries)
}

/// One entry of a catalogue from its files (built-in first), validated.
fn parse_entry<T: DeserializeOwned + Validate>(files: &[SourceFile]) -> Result<T, Error> {
    let mut entry: T = parse_layers(files)?;
    let last = files.last().expect("every entry has a file");
    entry.validate(&last.name, &Locator::new(&last.text))?;
    Ok(entry)
}

/// The files of each entry of a catalogue (`profiles`, `substitutes`) by name: the built-in
/// one, then the repository's `.devenv/<dir>/<name>.yaml`.
fn catalogue_layers(
    repo: &Path,
    dir: &str,
    builtin: &[(&str, &str)],
) -> Result<BTreeMap<String, Vec<SourceFile>>, Error> {
    let mut layers: BTreeMap<String, Vec<SourceFile>> = builtin
        .iter()
        .map(|(name, text)| {
            let file = SourceFile { name: format!("<built-in>/{dir}/{name}.yaml"), text: text.to_string() };
            (name.to_string(), vec![file])
        })
        .collect();
    let user_dir = repo.join(".devenv").join(dir);
    if user_dir.is_dir() {
        let entries = fs::read_dir(&user_dir).map_err(|source| Error::Read { path: user_dir.clone(), source })?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|ext| ext == "yaml" || ext == "yml"))
            .collect();
        paths.sort();
        for path in paths {
            let stem = path.file_stem().unwrap_or_default().to_string_lossy().into_owned();
            let relative = format!(".devenv/{dir}/{}", path.file_name().unwrap_or_default().to_string_lossy());
            let file = SourceFile::read(repo, &relative)?;
            if let Err(reason) = naming::check_label(&stem, naming::MAX_OBJECT_LEN) {
                return Err(Error::Invalid {
                    problem: Problem::InvalidName,
                    at: Location { file: relative, position: None },
                    field: String::new(),
                    message: format!("file name `{stem}` {reason}"),
                    hint: Some("the file name (without .yaml) is the entry's name: use a DNS label".to_string()),
                });
            }
            layers.entry(stem).or_default().push(file);
        }
    }
    Ok(layers)
}

/// A profile from the text of one file, validated as `load` validates it.
#[cfg(test)]
pub fn profile_from_yaml(text: &str) -> Result<Profile, Error> {
    parse_entry(&[SourceFile { name: "profile.yaml".to_string(), text: text.to_string() }])
}

/// Checks a catalogue entry beyond its shape, and reads the values written as text
/// (durations, sizes) into their typed fields: nothing downstream parses them again.
trait Validate {
    fn validate(&mut self, file: &str, locator: &Locator) -> Result<(), Error>;
}

impl Validate for Profile {
    fn validate(&mut self, file: &str, locator: &Locator) -> Result<(), Error> {
        let at = |field: &str| Location { file: file.to_string(), position: locator.find(field) };
        if let Some(memory) = &self.substitutes.memory_text {
            let Some(bytes) = parse_memory(memory) else {
                return Err(Error::Invalid {
                    problem: Problem::Invalid,
                    at: at("substitutes.memory"),
                    field: "substitutes.memory".to_string(),
                    message: format!("`{memory}` is not a memory size"),
                    hint: Some("write it like `512Mi` or `2Gi`".to_string()),
                });
            };
            self.substitutes.memory_bytes = Some(bytes);
        }
        let quota = self.quota.as_ref();
        let limits = self.limits.as_ref();
        // (field, value, whether it is CPU rather than memory)
        let quantities: [(&str, Option<&String>, bool); 6] = [
            ("quota.cpu", quota.and_then(|q| q.cpu.as_ref()), true),
            ("quota.memory", quota.and_then(|q| q.memory.as_ref()), false),
            ("limits.defaultCpu", limits.and_then(|l| l.default_cpu.as_ref()), true),
            ("limits.defaultMemory", limits.and_then(|l| l.default_memory.as_ref()), false),
            ("limits.defaultRequestCpu", limits.and_then(|l| l.default_request_cpu.as_ref()), true),
            ("limits.defaultRequestMemory", limits.and_then(|l| l.default_request_memory.as_ref()), false),
        ];
        for (field, value, is_cpu) in quantities {
            let Some(value) = value else { continue };
            let (valid, hint) = if is_cpu {
                (parse_cpu(value).is_some(), "write it like `500m`, `1` or `2.5`")
            } else {
                (parse_memory(value).is_some(), "write it like `512Mi` or `2Gi`")
            };
            if !valid {
                return Err(Error::Invalid {
                    problem: Problem::Invalid,
                    at: at(field),
                    field: field.to_string(),
                    message: format!("`{value}` is not {}", if is_cpu { "a CPU amount" } else { "a memory size" }),
                    hint: Some(hint.to_string()),
                });
            }
        }
        if let Some(limits) = limits {
            // The API server rejects a LimitRange whose default request exceeds its default limit.
            let cpu = (parse_cpu(limits.request_cpu()), parse_cpu(limits.cpu()));
            let memory = (parse_memory(limits.request_memory()), parse_memory(limits.memory()));
            let over = if cpu.0 > cpu.1 {
                Some(("limits.defaultRequestCpu", limits.request_cpu(), "limits.defaultCpu", limits.cpu()))
            } else if memory.0 > memory.1 {
                Some(("limits.defaultRequestMemory", limits.request_memory(), "limits.defaultMemory", limits.memory()))
            } else {
                None
            };
            if let Some((request_field, request, limit_field, limit)) = over {
                return Err(Error::Invalid {
                    problem: Problem::Invalid,
                    at: at(if limits.default_request_cpu.is_some() || limits.default_request_memory.is_some() {
                        request_field
                    } else {
                        limit_field
                    }),
                    field: request_field.to_string(),
                    message: format!("the default request `{request}` is more than the default limit `{limit}`"),
                    hint: Some(format!("set `{request_field}` to at most `{limit_field}`")),
                });
            }
        }
        if let Some(namespace) = &self.ingress_namespace
            && let Err(reason) = naming::check_label(namespace, naming::MAX_OBJECT_LEN)
        {
            return Err(Error::Invalid {
                problem: Problem::Invalid,
                at: at("ingressNamespace"),
                field: "ingressNamespace".to_string(),
                message: format!("namespace `{namespace}` {reason}"),
                hint: Some("name the namespace the ingress controller runs in, e.g. `ingress-nginx`".to_string()),
            });
        }
        if let Some(ttl) = &self.ttl_text {
            let Some(duration) = parse_duration(ttl) else {
                return Err(Error::Invalid {
                    problem: Problem::Invalid,
                    at: at("ttl"),
                    field: "ttl".to_string(),
                    message: format!("`{ttl}` is not a duration"),
                    hint: Some("write it like `90m`, `72h` or `7d`".to_string()),
                });
            };
            self.ttl = Some(duration);
        }
        Ok(())
    }
}

impl Validate for Substitute {
    fn validate(&mut self, file: &str, locator: &Locator) -> Result<(), Error> {
        let invalid = |field: String, message: String, hint: &str| Error::Invalid {
            problem: Problem::Invalid,
            at: Location { file: file.to_string(), position: locator.find(&field) },
            field,
            message,
            hint: Some(hint.to_string()),
        };
        if !self.ports.contains_key(&self.main_port) {
            return Err(invalid(
                "mainPort".to_string(),
                format!("`{}` is not one of `ports`", self.main_port),
                "name one of the entries under `ports`",
            ));
        }
        if !self.versions.tags.contains_key(&self.versions.default) {
            return Err(invalid(
                "versions.default".to_string(),
                format!("`{}` is not one of `versions.tags`", self.versions.default),
                "add it under `versions.tags` or pick one of them",
            ));
        }
        let Some(timeout) = parse_duration(self.probe.timeout_text()) else {
            return Err(invalid(
                "probe.timeout".to_string(),
                format!("`{}` is not a duration", self.probe.timeout_text()),
                "write it like `30s` or `2m`",
            ));
        };
        self.probe_timeout = timeout;
        if let catalogue::Probe::Http { path, status, json, .. } = &self.probe {
            if !path.starts_with('/') {
                return Err(invalid(
                    "probe.path".to_string(),
                    format!("`{path}` does not start with `/`"),
                    "write the path of the URL, e.g. `/_cluster/health`",
                ));
            }
            if status.is_empty() || status.iter().any(|s| !(100..=599).contains(s)) {
                return Err(invalid(
                    "probe.status".to_string(),
                    format!("`{status:?}` is not a list of HTTP status codes"),
                    "list the accepted codes, e.g. `[200]`",
                ));
            }
            if let Some(condition) = json {
                if !condition.pointer.is_empty() && !condition.pointer.starts_with('/') {
                    return Err(invalid(
                        "probe.json.pointer".to_string(),
                        format!("`{}` is not a JSON pointer", condition.pointer),
                        "write it like `/status` (RFC 6901)",
                    ));
                }
                if condition.one_of.is_empty() {
                    return Err(invalid(
                        "probe.json.oneOf".to_string(),
                        "no accepted value".to_string(),
                        "list the accepted values, e.g. `[green, yellow]`",
                    ));
                }
            }
        }
        let known = self.template_variables();
        let mut per_resource = known.clone();
        per_resource.insert("resource".to_string());
        for (field, template) in self.templates() {
            let known = if field.starts_with("resources.outputs.") { &per_resource } else { &known };
            for variable in template::variables(template) {
                if !known.contains(variable) {
                    let names: Vec<&str> = known.iter().map(String::as_str).collect();
                    let hint = if variable == "resource" {
                        "`${resource}` (one resource's name) is known only under `resources.outputs`; `${resources}` lists them all".to_string()
                    } else {
                        known_list("variables", &names, variable)
                    };
                    return Err(invalid(field.clone(), format!("unknown variable `${{{variable}}}`"), &hint));
                }
            }
        }
        Ok(())
    }
}

impl Substitute {
    /// Names a template may use: parameters, secrets, `service`, `env`, `host`, `port` (the
    /// main port), `port.<name>` for every port, and `resources` (the service's resource names,
    /// joined with `,`). A resource's outputs may also use `resource`, its name.
    pub fn template_variables(&self) -> BTreeSet<String> {
        let mut names: BTreeSet<String> = self.params.keys().chain(&self.secrets).cloned().collect();
        names.extend(["service", "env", "host", "port", "resources"].map(String::from));
        names.extend(self.ports.keys().map(|p| format!("port.{p}")));
        names
    }

    /// Every templated field, with its path.
    fn templates(&self) -> Vec<(String, &str)> {
        let mut all: Vec<(String, &str)> = Vec::new();
        all.extend(self.env.iter().map(|(k, v)| (format!("env.{k}"), v.as_str())));
        if let Some(command) = &self.command {
            all.extend(command.iter().enumerate().map(|(i, v)| (format!("command[{i}]"), v.as_str())));
        }
        all.extend(self.outputs.iter().map(|(k, v)| (format!("outputs.{k}"), v.template())));
        all.extend(self.probe.templates().into_iter().map(|(k, v)| (format!("probe.{k}"), v)));
        if let Some(resources) = &self.resources {
            all.extend(resources.create.templates().into_iter().map(|(k, v)| (format!("resources.create.{k}"), v)));
            all.extend(resources.outputs.iter().map(|(k, v)| (format!("resources.outputs.{k}"), v.template())));
        }
        all
    }
}

/// Parses the files of one entry, later files' top-level fields replacing earlier ones'.
fn parse_layers<T: DeserializeOwned>(files: &[SourceFile]) -> Result<T, Error> {
    let mut merged = serde_yaml::Mapping::new();
    // Top-level key → index of the file that supplied it, to place errors.
    let mut owner: BTreeMap<String, usize> = BTreeMap::new();
    for (index, file) in files.iter().enumerate() {
        let value: serde_yaml::Value = serde_yaml::from_str(&file.text).map_err(|e| syntax_error(file, &e))?;
        let mapping = match value {
            serde_yaml::Value::Mapping(mapping) => mapping,
            serde_yaml::Value::Null => serde_yaml::Mapping::new(),
            _ => {
                return Err(Error::Invalid {
                    problem: Problem::Syntax,
                    at: Location { file: file.name.clone(), position: Some(Position { line: 1, column: 1 }) },
                    field: String::new(),
                    message: "expected a mapping of fields".to_string(),
                    hint: Some("the file holds one YAML mapping, e.g. `key: value` lines".to_string()),
                });
            }
        };
        for (key, value) in mapping {
            if let Some(name) = key.as_str() {
                owner.insert(name.to_string(), index);
            }
            merged.insert(key, value);
        }
    }
    serde_path_to_error::deserialize(serde_yaml::Value::Mapping(merged)).map_err(|error| {
        let mut field = error.path().to_string();
        if field == "." {
            field.clear();
        }
        let message = strip_position(&error.inner().to_string());
        let (lookup, hint) = locate_schema_error(&field, &message);
        let top = lookup.split(['.', '[']).next().unwrap_or_default();
        let file = &files[owner.get(top).copied().unwrap_or(files.len() - 1)];
        let locator = Locator::new(&file.text);
        // An unknown field is its key; any other error is about the value.
        let position = match lookup.is_empty() {
            true => None,
            false if message.starts_with("unknown field") => locator.find_key(&lookup),
            false => locator.find(&lookup),
        };
        Error::Invalid {
            problem: Problem::Syntax,
            at: Location { file: file.name.clone(), position },
            field,
            message,
            hint: Some(hint),
        }
    })
}

/// Where a serde error points, and its hint. serde's path for an unknown field already ends
/// with that field; for a missing field it is the parent.
fn locate_schema_error(field: &str, message: &str) -> (String, String) {
    let quoted = |prefix: &str| message.strip_prefix(prefix).and_then(|m| m.split('`').next()).map(str::to_string);
    if let Some(unknown) = quoted("unknown field `") {
        let expected: Vec<&str> = message
            .split_once("expected one of ")
            .or_else(|| message.split_once("expected "))
            .map(|(_, list)| list.split(", ").map(|f| f.trim_matches('`')).collect())
            .unwrap_or_default();
        let hint = match suggest(&unknown, &expected) {
            Some(best) => format!("did you mean `{best}`?"),
            None => "remove it, or see the configuration reference in README.md".to_string(),
        };
        return (field.to_string(), hint);
    }
    if let Some(missing) = quoted("missing field `") {
        let parent = if field.is_empty() { "the top level".to_string() } else { format!("`{field}`") };
        return (
            field.to_string(),
            format!("add `{missing}:` to {parent} (see the configuration reference in README.md)"),
        );
    }
    let reference = if field.is_empty() { "the file".to_string() } else { format!("`{field}`") };
    (field.to_string(), format!("see the configuration reference in README.md for {reference}"))
}

fn syntax_error(file: &SourceFile, error: &serde_yaml::Error) -> Error {
    let mut position = error.location().map(|l| Position { line: l.line(), column: l.column() });
    // serde_yaml places a duplicate key at its mapping; the second twin is what to remove.
    if error.to_string().starts_with("duplicate entry") {
        position = Locator::new(&file.text).duplicate_key().map(|(_, p)| *p).or(position);
    }
    Error::Invalid {
        problem: Problem::Syntax,
        at: Location { file: file.name.clone(), position },
        field: String::new(),
        message: strip_position(&error.to_string()),
        hint: Some("fix the YAML syntax at that position".to_string()),
    }
}

/// serde_yaml writes " at line L column C" into messages; devenv shows the position in front.
fn strip_position(message: &str) -> String {
    let mut out = message.to_string();
    while let Some(start) = out.find(" at line ") {
        let rest = &out[start + " at line ".len()..];
        let Some(after_column) = rest.find(" column ") else {
            break;
        };
        let digits = rest[after_column + " column ".len()..].chars().take_while(char::is_ascii_digit).count();
        let end = start + " at line ".len() + after_column + " column ".len() + digits;
        out.replace_range(start..end, "");
    }
    out
}

/// `30s`, `5m`, `72h`, `7d` → seconds.
pub fn parse_duration(text: &str) -> Option<std::time::Duration> {
    let text = text.trim();
    let unit_at = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(unit_at);
    let number: u64 = number.parse().ok()?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return None,
    };
    Some(std::time::Duration::from_secs(number.checked_mul(seconds)?))
}

/// `500m`, `1`, `2.5` → millicores (at least 1).
pub fn parse_cpu(text: &str) -> Option<u64> {
    let text = text.trim();
    if let Some(milli) = text.strip_suffix('m') {
        return milli.parse::<u64>().ok().filter(|m| *m > 0 && milli.bytes().all(|b| b.is_ascii_digit()));
    }
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() && fraction.is_empty() || !digits(whole) || !digits(fraction) || fraction.len() > 3 {
        return None;
    }
    let whole: u64 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
    let fraction: u64 = if fraction.is_empty() { 0 } else { format!("{fraction:0<3}").parse().ok()? };
    whole.checked_mul(1000)?.checked_add(fraction).filter(|m| *m > 0)
}

/// `512Mi`, `2Gi`, `1G`, `1048576` → bytes.
pub fn parse_memory(text: &str) -> Option<i64> {
    let text = text.trim();
    let unit_at = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(unit_at);
    let number: i64 = number.parse().ok()?;
    let factor: i64 = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        _ => return None,
    };
    number.checked_mul(factor).filter(|bytes| *bytes > 0)
}

#[cfg(test)]
mod tests;
