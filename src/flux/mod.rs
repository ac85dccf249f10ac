//! The Flux layer: the local overlay, packing the working tree, the `${VAR}` contract, and
//! the artifact Flux pulls.

pub mod artifact;
pub mod contract;
pub mod deploy;
pub mod overlay;
pub mod pack;

use std::collections::BTreeSet;

use serde_yaml::Value;

use crate::config::Config;
use crate::envmap::{self, EnvMap};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("devenv.yaml: flux.source `{0}` is not of the form `Kind/name`")]
    SourceRef(String),
    #[error(transparent)]
    Pack(#[from] pack::Error),
    #[error("{count} substitution variable(s) have no value:\n{details}")]
    Contract { count: usize, details: String },
    #[error(transparent)]
    Deploy(Box<deploy::Error>),
}

/// What `up` will hand to Flux: the packed, rewritten tree and the contract check.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub packed: pack::Packed,
    pub contract: contract::Report,
}

/// The overlay settings from devenv.yaml.
pub fn settings(config: &Config) -> Result<overlay::Settings, Error> {
    let flux = &config.project.flux;
    let own_source = overlay::SourceRef::parse(&flux.source).ok_or_else(|| Error::SourceRef(flux.source.clone()))?;
    Ok(overlay::Settings {
        flux_namespace: flux.namespace.clone(),
        own_source,
        config_map: config.project.environment.config_map.name.clone(),
        secret: envmap::secret_name(config),
        disable: config.project.overlay.disable.clone(),
        max_replicas: config.project.overlay.max_replicas,
        patches: config.project.overlay.patches.clone(),
    })
}

/// Packs the working tree with the overlay and checks the substitution contract against
/// the keys the environment provides (which do not depend on generated values). Reads files only.
pub fn prepare(config: &Config, env: &EnvMap) -> Result<Prepared, Error> {
    let settings = settings(config)?;
    let packed = pack::pack(&config.repo, &config.project.flux.path, &settings)?;
    let files = pack::list_files(&config.repo, &config.project.flux.path)?;
    let documents = flux_documents(&packed);
    let visible = BTreeSet::from([settings.config_map.clone(), settings.secret.clone()]);
    let scopes = contract::scopes(&documents, &visible, overlay::SOURCE_NAME);
    let contract = contract::check(&config.repo, &files, &scopes, &envmap::keys(env));
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

/// The rewritten Flux objects of the packed tree.
fn flux_documents(packed: &pack::Packed) -> Vec<Value> {
    let mut documents = Vec::new();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(packed.bytes.as_slice()));
    let Ok(entries) = archive.entries() else { return documents };
    for mut entry in entries.flatten() {
        let mut text = String::new();
        if std::io::Read::read_to_string(&mut entry, &mut text).is_err() || !overlay::may_hold_flux_objects(&text) {
            continue;
        }
        for document in serde_yaml::Deserializer::from_str(&text) {
            if let Ok(value) = serde::Deserialize::deserialize(document) {
                documents.push(value);
            }
        }
    }
    documents
}
