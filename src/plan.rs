//! What `up` will do: a pure function of the configuration, the desired containers and what
//! exists. `devenv plan` prints it; `up` carries it out.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::Config;
use crate::config::profile::Provider;
use crate::ports::Choice;
use crate::providers::ClusterIntent;
use crate::substitutes::{Action, Desired, Observed};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub env: String,
    pub profile: String,
    pub cluster: ClusterStep,
    pub services: Vec<ServiceStep>,
    /// Containers of the environment whose service left devenv.yaml; `up` removes them.
    pub orphans: Vec<String>,
    /// What goes to Flux, when the profile has a cluster.
    pub flux: Option<FluxStep>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FluxStep {
    pub path: String,
    pub files: usize,
    /// One artifact per Kustomization, the root's first.
    pub artifacts: Vec<ArtifactStep>,
    /// Every change the overlay makes to a Flux object, with the file the object is in.
    pub changes: Vec<InFile<crate::flux::overlay::Change>>,
    /// The same objects before and after, with their files.
    pub diffs: Vec<InFile<crate::flux::overlay::ObjectDiff>>,
    pub contract: crate::flux::contract::Report,
    /// What Flux would fail on or get wrong (errors stop `up`), and whose value wins.
    pub findings: Vec<crate::flux::checks::Finding>,
    /// Charts `up` pushes to the environment's registry, and where.
    pub charts: Vec<ChartStep>,
}

/// Something about an object in a file of the repository: the file, and the thing's own fields.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InFile<T> {
    pub file: String,
    #[serde(flatten)]
    pub item: T,
}

impl<T: Clone> InFile<T> {
    fn all(pairs: &[(String, T)]) -> Vec<Self> {
        pairs.iter().map(|(file, item)| InFile { file: file.clone(), item: item.clone() }).collect()
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChartStep {
    /// The chart's directory in the repository.
    pub path: String,
    pub name: String,
    pub version: String,
    /// `<registry>/<repository>:<tag>`
    pub reference: String,
    /// The OCIRepository devenv serves it from to the HelmReleases installing it, if any.
    pub source: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactStep {
    pub source: String,
    pub kustomization: String,
    pub path: String,
    pub files: usize,
    pub digest: String,
}

impl FluxStep {
    /// The Flux step of `prepared`, its charts named in `registry` (the cluster's, or the
    /// placeholder of one not made yet).
    pub fn new(config: &Config, prepared: &crate::flux::Prepared, registry: &str) -> Self {
        let packed = &prepared.packed;
        FluxStep {
            path: config.project.flux.path.clone(),
            files: packed.paths.len(),
            artifacts: (packed.artifacts.iter())
                .map(|a| ArtifactStep {
                    source: a.source.clone(),
                    kustomization: a.kustomization.clone(),
                    path: a.path.clone(),
                    files: a.files,
                    digest: a.digest.clone(),
                })
                .collect(),
            changes: InFile::all(&packed.changes),
            diffs: InFile::all(&packed.diffs),
            contract: prepared.contract.clone(),
            findings: prepared.findings.clone(),
            charts: chart_steps(config, packed, registry),
        }
    }
}

/// The charts of `charts:` and those HelmReleases take from the working tree.
fn chart_steps(config: &Config, packed: &crate::flux::pack::Packed, registry: &str) -> Vec<ChartStep> {
    let mut steps = Vec::new();
    for chart in &config.project.charts {
        // `flux::prepare` has read every Chart.yaml of `charts:` already.
        let Ok(metadata) = crate::flux::charts::metadata_of(&config.repo, &chart.path) else { continue };
        let repository = format!("{}/{}", chart.repository.trim_matches('/'), metadata.name);
        steps.push(ChartStep {
            path: chart.path.clone(),
            reference: format!("{registry}/{repository}:{}", metadata.tag()),
            name: metadata.name,
            version: metadata.version,
            source: None,
        });
    }
    for chart in &packed.charts {
        let repository = crate::flux::artifact::repository(&config.env, &chart.source);
        steps.push(ChartStep {
            path: chart.path.clone(),
            name: chart.metadata.name.clone(),
            version: chart.metadata.version.clone(),
            reference: format!("{registry}/{repository}:{}", chart.metadata.tag()),
            source: Some(chart.source.clone()),
        });
    }
    steps
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStep {
    pub provider: Provider,
    pub description: String,
    /// What `up` would do with the cluster, and why (absent without a cluster).
    pub intent: Option<ClusterIntent>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStep {
    pub service: String,
    pub kind: String,
    pub container: String,
    pub image: String,
    pub action: Action,
    pub reason: String,
    pub port: u16,
    /// Set when the port is not the remembered one.
    pub port_note: Option<String>,
    pub volume: Option<VolumeStep>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeStep {
    pub name: String,
    /// True when the volume exists and its data is kept.
    pub exists: bool,
}

impl Plan {
    /// The plan of an environment before any step is planned.
    pub fn new(config: &Config) -> Self {
        Plan {
            env: config.env.clone(),
            profile: config.profile_name.clone(),
            cluster: ClusterStep {
                provider: config.profile.cluster.provider,
                description: config.profile.description.clone(),
                intent: None,
            },
            services: Vec::new(),
            orphans: Vec::new(),
            flux: None,
        }
    }
}

/// The plan of the substitutes alone: the cluster and Flux steps are planned apart.
pub fn compute(
    config: &Config,
    desired: &[Desired],
    observed: &BTreeMap<String, Observed>,
    orphans: &[String],
) -> Plan {
    Plan { services: service_steps(desired, observed), orphans: orphans.to_vec(), ..Plan::new(config) }
}

/// What `up` does with each desired container, given what exists.
pub fn service_steps(desired: &[Desired], observed: &BTreeMap<String, Observed>) -> Vec<ServiceStep> {
    desired
        .iter()
        .map(|d| {
            let seen = observed.get(&d.service.name).cloned().unwrap_or_default();
            let (action, reason) = decide(d, &seen);
            let main = d.ports[&d.service.substitute.main_port];
            ServiceStep {
                service: d.service.name.clone(),
                kind: d.service.kind.clone(),
                container: d.spec.name.clone(),
                image: d.spec.image.clone(),
                action,
                reason,
                port: main.port(),
                port_note: port_note(main),
                volume: d
                    .spec
                    .volume
                    .as_ref()
                    .map(|(name, _)| VolumeStep { name: name.clone(), exists: seen.volume_exists }),
            }
        })
        .collect()
}

/// The action for one container and why.
fn decide(desired: &Desired, observed: &Observed) -> (Action, String) {
    let Some(container) = &observed.container else {
        return (Action::Create, "no container yet".to_string());
    };
    let wanted_hash = desired.spec.labels.get(crate::naming::LABEL_SPEC_HASH);
    if container.labels.get(crate::naming::LABEL_SPEC_HASH) != wanted_hash {
        let reason = if container.image != desired.spec.image {
            format!("image changes from {} to {}", container.image, desired.spec.image)
        } else if container.ports != desired.spec.ports {
            "published ports change".to_string()
        } else {
            "settings changed".to_string()
        };
        return (Action::Recreate, reason);
    }
    if !container.running {
        return (Action::Start, format!("container is {}", container.state));
    }
    (Action::Keep, "up to date".to_string())
}

fn port_note(choice: Choice) -> Option<String> {
    match choice {
        Choice::Moved { from, to } => Some(format!("port {from} is taken by another program; moving to {to}")),
        Choice::New(port) => Some(format!("new port {port}")),
        Choice::Pinned(_) | Choice::Kept(_) => None,
    }
}

/// The plan as text for people.
pub fn render(plan: &Plan) -> String {
    let mut out = format!("Plan for environment `{}` (profile `{}`)\n", plan.env, plan.profile);
    out.push_str(&format!(
        "  cluster: {}\n",
        match plan.cluster.provider {
            Provider::None => "none (substitutes only)".to_string(),
            other => format!("{} — {}", other.as_str(), plan.cluster.description),
        }
    ));
    if let Some(intent) = &plan.cluster.intent {
        out.push_str(&format!("  {:<8} the cluster: {}\n", intent.action.verb(), intent.reason));
    }
    if plan.services.is_empty() {
        out.push_str("  no services\n");
    }
    for step in &plan.services {
        let verb = match step.action {
            Action::Create => "create",
            Action::Recreate => "recreate",
            Action::Start => "start",
            Action::Keep => "keep",
        };
        out.push_str(&format!(
            "  {verb:<8} {} ({}, {}) on 127.0.0.1:{}: {}\n",
            step.container, step.kind, step.image, step.port, step.reason
        ));
        if let Some(note) = &step.port_note {
            out.push_str(&format!("           {note}\n"));
        }
        if let Some(volume) = &step.volume {
            let what = if volume.exists { "keeps its data in" } else { "creates volume" };
            out.push_str(&format!("           {what} {}\n", volume.name));
        }
    }
    for orphan in &plan.orphans {
        out.push_str(&format!("  remove   {orphan}: its service is no longer in devenv.yaml (volume kept)\n"));
    }
    if let Some(flux) = &plan.flux {
        out.push_str(&format!(
            "  flux:    apply `{}` from the working tree ({} files) as {} artifact(s):\n",
            flux.path,
            flux.files,
            flux.artifacts.len()
        ));
        for artifact in &flux.artifacts {
            let short = artifact.digest.get(..19).unwrap_or(&artifact.digest);
            out.push_str(&format!(
                "           {} for {} (`{}`, {} files, {short})\n",
                artifact.source, artifact.kustomization, artifact.path, artifact.files
            ));
        }
        for (index, chart) in flux.charts.iter().enumerate() {
            let label = if index == 0 { "  charts: " } else { "         " };
            let served = match &chart.source {
                Some(source) => format!(", served as OCIRepository/{source} to the HelmReleases installing it"),
                None => String::new(),
            };
            out.push_str(&format!(
                "{label} push {} ({} {}) to {}{served}\n",
                chart.path, chart.name, chart.version, chart.reference
            ));
        }
        if flux.diffs.is_empty() {
            out.push_str("  overlay: no Flux object changes\n");
        } else {
            out.push_str(
                "  overlay: rewrites these Flux objects inside the artifacts (files on disk stay as they are):\n",
            );
        }
        for InFile { file, item: diff } in &flux.diffs {
            let what: Vec<&str> = (flux.changes.iter())
                .filter(|change| &change.file == file && change.item.object == diff.object)
                .map(|change| change.item.what.as_str())
                .collect();
            out.push_str(&format!("    {file}: {}: {}\n", diff.object, what.join("; ")));
            out.push_str(&render_diff(diff));
        }
        if flux.contract.missing.is_empty() && flux.contract.unverifiable.is_empty() && flux.contract.unused.is_empty()
        {
            out.push_str("  contract: every substituted variable has a value\n");
        } else {
            out.push_str("  contract:\n");
            out.push_str(&crate::flux::contract::render(&flux.contract));
        }
        if flux.findings.is_empty() {
            out.push_str("  checks:  nothing Flux would fail on\n");
        } else {
            out.push_str("  checks:\n");
            out.push_str(&crate::flux::checks::render(&flux.findings));
        }
    }
    out
}

/// A unified diff of one rewritten Flux object, indented under the plan.
fn render_diff(diff: &crate::flux::overlay::ObjectDiff) -> String {
    let after = diff.after.as_deref().unwrap_or("");
    let text = similar::TextDiff::from_lines(diff.before.as_str(), after);
    let unified = text.unified_diff().context_radius(2).to_string();
    unified.lines().map(|line| format!("      {line}\n")).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::{self, Selection};
    use crate::docker::ContainerInfo;
    use crate::state::State;
    use crate::substitutes::{self, Observed};

    fn config() -> (tempfile::TempDir, Config) {
        let dir = tempfile::tempdir().unwrap();
        let project = "project: shop\ndefaultProfile: standalone\nflux:\n  path: clusters/local\nenvironment:\n  configMap:\n    name: cluster-env\nservices:\n  - name: db\n    kind: rds-mariadb\n";
        std::fs::write(dir.path().join("devenv.yaml"), project).unwrap();
        let config =
            config::load(&Selection { repo: Some(dir.path().into()), ..Default::default() }, dir.path()).unwrap();
        (dir, config)
    }

    fn running(desired: &Desired) -> ContainerInfo {
        ContainerInfo {
            id: "abc".into(),
            name: desired.spec.name.clone(),
            image: desired.spec.image.clone(),
            running: true,
            state: "running".into(),
            exit_code: Some(0),
            labels: desired.spec.labels.clone(),
            ports: desired.spec.ports.clone(),
        }
    }

    fn plan_with(config: &Config, state: &mut State, container: Option<ContainerInfo>) -> (Plan, Vec<Desired>) {
        let observed = BTreeMap::from([(
            "db".to_string(),
            Observed { container, volume_exists: false, credentials: BTreeMap::new() },
        )]);
        let desired = substitutes::resolve(config, state, &observed, &Default::default()).unwrap();
        (compute(config, &desired, &observed, &[]), desired)
    }

    #[test]
    fn creates_what_is_missing() {
        let (_dir, config) = config();
        let mut state = State::default();
        let (plan, desired) = plan_with(&config, &mut state, None);
        assert_eq!(plan.services[0].action, Action::Create);
        assert_eq!(plan.services[0].container, "devenv-shop-db");
        assert_eq!(desired[0].spec.volume, Some(("devenv-shop-db-data".into(), "/var/lib/mysql".into())));
        assert!(plan.services[0].port_note.as_deref().unwrap().starts_with("new port"));
        assert!(render(&plan).contains("create   devenv-shop-db"));
    }

    #[test]
    fn keeps_what_matches_and_remembers_credentials_and_ports() {
        let (_dir, config) = config();
        let mut state = State::default();
        let (_, first) = plan_with(&config, &mut state, None);
        let password = state.services["db"].secrets["password"].clone();
        let (plan, second) = plan_with(&config, &mut state, Some(running(&first[0])));
        assert_eq!(plan.services[0].action, Action::Keep);
        assert_eq!(first[0].spec, second[0].spec, "same inputs give the same container");
        assert_eq!(state.services["db"].secrets["password"], password);
        assert_eq!(second[0].spec.env["MARIADB_PASSWORD"], password);
        assert_eq!(plan.services[0].port_note, None);
    }

    #[test]
    fn starts_a_stopped_container() {
        let (_dir, config) = config();
        let mut state = State::default();
        let (_, first) = plan_with(&config, &mut state, None);
        let stopped = ContainerInfo { running: false, state: "exited".into(), ..running(&first[0]) };
        let (plan, _) = plan_with(&config, &mut state, Some(stopped));
        assert_eq!(plan.services[0].action, Action::Start);
        assert_eq!(plan.services[0].reason, "container is exited");
    }

    #[test]
    fn recreates_on_a_changed_image_and_says_why() {
        let (_dir, mut config) = config();
        let mut state = State::default();
        let (_, first) = plan_with(&config, &mut state, None);
        config.services[0].image = "docker.io/library/mariadb:11.8".into();
        let (plan, _) = plan_with(&config, &mut state, Some(running(&first[0])));
        assert_eq!(plan.services[0].action, Action::Recreate);
        assert_eq!(
            plan.services[0].reason,
            "image changes from docker.io/library/mariadb:11.4 to docker.io/library/mariadb:11.8"
        );
    }

    #[test]
    fn recreates_on_changed_settings() {
        let (_dir, mut config) = config();
        let mut state = State::default();
        let (_, first) = plan_with(&config, &mut state, None);
        config.services[0].params.insert("database".into(), "orders".into());
        let (plan, _) = plan_with(&config, &mut state, Some(running(&first[0])));
        assert_eq!(plan.services[0].action, Action::Recreate);
        assert_eq!(plan.services[0].reason, "settings changed");
    }

    #[test]
    fn lists_orphans() {
        let (_dir, config) = config();
        let mut state = State::default();
        let desired = substitutes::resolve(&config, &mut state, &BTreeMap::new(), &Default::default()).unwrap();
        let plan = compute(&config, &desired, &BTreeMap::new(), &["devenv-shop-old".to_string()]);
        assert!(render(&plan).contains("remove   devenv-shop-old: its service is no longer in devenv.yaml"));
    }
}
