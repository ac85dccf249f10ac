//! The repository's Helm charts published to the environment's registry as OCI charts: those
//! of devenv.yaml's `charts:`, and those HelmReleases take from the working tree.

use std::collections::BTreeMap;
use std::path::Path;

use super::artifact::{self, Blob, Pushed};
use super::charts::{CONFIG_MEDIA_TYPE, CONTENT_MEDIA_TYPE, Error, Metadata, package};
use crate::config::project::ChartConfig;

/// Packages each chart and pushes the ones that changed to `<registry>/<repository>/<name>:<version>`.
pub async fn publish(repo: &Path, charts: &[ChartConfig], registry: &str) -> Result<Vec<Pushed>, Error> {
    let client = artifact::client(registry);
    let mut pushed = Vec::new();
    for chart in charts {
        let (metadata, bytes) = package(repo, &chart.path, None)?;
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
    Ok(artifact::push_if_changed(client, registry, repository, &metadata.tag(), content, config, BTreeMap::new())
        .await?)
}
