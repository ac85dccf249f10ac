//! The Flux layer: the local overlay, packing the working tree, the `${VAR}` contract, and
//! the artifact Flux pulls.

pub mod artifact;
pub mod charts;
pub mod closure;
pub mod contract;
pub mod deploy;
pub mod logs;
pub mod overlay;
pub mod pack;
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
    #[error(transparent)]
    Chart(#[from] charts::Error),
    #[error(transparent)]
    Deploy(Box<deploy::Error>),
}

/// What `{{ registry }}` shows as before the cluster, and so its registry, exists.
pub const REGISTRY_PLACEHOLDER: &str = "<environment registry>";

/// What `up` will hand to Flux: the packed, rewritten tree and the contract check.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub packed: pack::Packed,
    pub contract: contract::Report,
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
    })
}

/// Packs the working tree with the overlay; `registry` fills `{{ registry }}`. Reads files only.
pub fn pack(config: &Config, registry: &str, cluster: Capabilities) -> Result<pack::Packed, Error> {
    let settings = settings(config, registry, cluster)?;
    Ok(pack::pack(&config.repo, &config.project.flux.path, deploy::ROOT_NAME, &settings)?)
}

/// Packs the working tree with the overlay and checks the substitution contract against
/// the keys the environment provides (which do not depend on generated values). Reads files
/// only; before the cluster exists, `registry` is `REGISTRY_PLACEHOLDER`.
pub fn prepare(config: &Config, env: &EnvMap, registry: &str, cluster: Capabilities) -> Result<Prepared, Error> {
    let packed = pack(config, registry, cluster)?;
    let visible = BTreeSet::from([config.project.environment.config_map.name.clone(), envmap::secret_name(config)]);
    let scopes = contract::scopes(&packed.objects, &visible, &packed.sources());
    let contract = contract::check(&config.repo, &packed.paths, &scopes, &envmap::keys(env));
    Ok(Prepared { packed, contract })
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
}
