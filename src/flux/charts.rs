//! Helm charts kept in the repository, packaged from the working tree and published to the
//! environment's registry as OCI charts, so HelmReleases re-pointed there install the local copy.

use std::collections::BTreeMap;
use std::path::Path;

use serde_yaml::Value;

use super::artifact::{self, Blob, Pushed};
use super::pack;
use crate::config::project::ChartConfig;

pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.cncf.helm.config.v1+json";
pub const CONTENT_MEDIA_TYPE: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`{path}` is not a Helm chart: {reason}")]
    Invalid { path: String, reason: String },
    #[error(transparent)]
    Pack(#[from] pack::Error),
    #[error(transparent)]
    Artifact(#[from] artifact::Error),
}

/// What Chart.yaml says about a chart.
#[derive(Debug, Clone)]
pub struct Metadata {
    pub name: String,
    pub version: String,
    /// Chart.yaml as JSON: the OCI config Helm expects.
    pub json: serde_json::Value,
}

/// Reads `<dir>/Chart.yaml`.
pub fn metadata(dir: &Path) -> Result<Metadata, String> {
    let text = std::fs::read_to_string(dir.join("Chart.yaml")).map_err(|e| format!("cannot read Chart.yaml ({e})"))?;
    let value: Value = serde_yaml::from_str(&text).map_err(|e| format!("Chart.yaml does not parse ({e})"))?;
    let field = |name: &str| {
        value.get(name).and_then(Value::as_str).map(str::to_string).ok_or(format!("Chart.yaml has no `{name}`"))
    };
    let (name, version) = (field("name")?, field("version")?);
    let json = serde_json::to_value(&value).map_err(|e| format!("Chart.yaml is not plain data ({e})"))?;
    Ok(Metadata { name, version, json })
}

/// The chart in `path` (relative to the repository) packaged like `helm package`: its files
/// under `<name>/`, deterministically.
pub fn package(repo: &Path, path: &str) -> Result<(Metadata, Vec<u8>), Error> {
    let dir = repo.join(path);
    let metadata = metadata(&dir).map_err(|reason| Error::Invalid { path: path.to_string(), reason })?;
    let files = pack::list_files(&dir, "")?;
    let mut entries = Vec::new();
    for relative in &files {
        let path = dir.join(relative);
        let content = std::fs::read(&path).map_err(|source| pack::Error::Read { path, source })?;
        entries.push((format!("{}/{relative}", metadata.name), content));
    }
    let bytes = pack::archive(entries.iter().map(|(name, content)| (name.as_str(), content.as_slice(), false)))?;
    Ok((metadata, bytes))
}

/// Packages each chart and pushes the ones that changed to `<registry>/<repository>/<name>:<version>`.
pub async fn publish(repo: &Path, charts: &[ChartConfig], registry: &str) -> Result<Vec<Pushed>, Error> {
    let client = artifact::client(registry);
    let mut pushed = Vec::new();
    for chart in charts {
        let (metadata, bytes) = package(repo, &chart.path)?;
        let repository = format!("{}/{}", chart.repository.trim_matches('/'), metadata.name);
        pushed.push(push(&client, registry, &repository, &metadata, &bytes).await?);
    }
    Ok(pushed)
}

/// Pushes a packaged chart as `<registry>/<repository>:<version>` unless it is there already.
pub async fn push(
    client: &oci_client::Client,
    registry: &str,
    repository: &str,
    metadata: &Metadata,
    bytes: &[u8],
) -> Result<Pushed, Error> {
    let config = serde_json::to_vec(&metadata.json).expect("JSON values serialise");
    let content = Blob { bytes, media_type: CONTENT_MEDIA_TYPE };
    let config = Blob { bytes: &config, media_type: CONFIG_MEDIA_TYPE };
    Ok(artifact::push_if_changed(client, registry, repository, &metadata.version, content, config, BTreeMap::new())
        .await?)
}
