//! The packed tree as an OCI artifact with Flux's media types, pushed to the environment's
//! registry only when its content changed.

use std::collections::BTreeMap;

use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use super::pack::Packed;

pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.cncf.flux.config.v1+json";
pub const CONTENT_MEDIA_TYPE: &str = "application/vnd.cncf.flux.content.v1.tar+gzip";
/// The tag devenv pushes; the OCIRepository follows it.
pub const TAG: &str = "latest";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`{reference}` is not a valid artifact reference")]
    Reference {
        reference: String,
        #[source]
        source: oci_client::ParseError,
    },
    #[error("cannot push the artifact to `{reference}`")]
    Push {
        reference: String,
        #[source]
        source: oci_client::errors::OciDistributionError,
    },
}

/// Where an environment's artifact lives: `<registry>/devenv/<env>:latest`.
pub fn reference(registry: &str, env: &str) -> String {
    format!("{registry}/devenv/{env}:{TAG}")
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Pushed {
    pub reference: String,
    /// False when the registry already held the same content.
    pub pushed: bool,
    /// Digest of the content layer.
    pub digest: String,
    /// Digest of the manifest: Flux's revision is `latest@<this>`.
    pub manifest_digest: String,
}

/// Pushes the packed tree unless the tag already points at the same content. `registry` is
/// a plain-HTTP registry on this machine (`127.0.0.1:PORT`).
pub async fn push_if_changed(registry: &str, env: &str, packed: &Packed, source: &str) -> Result<Pushed, Error> {
    let reference_text = reference(registry, env);
    let reference: Reference =
        reference_text.parse().map_err(|source| Error::Reference { reference: reference_text.clone(), source })?;
    crate::init_tls();
    let client = Client::new(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(vec![registry.to_string()]),
        ..Default::default()
    });
    let auth = RegistryAuth::Anonymous;
    if let Ok((manifest, manifest_digest)) = client.pull_image_manifest(&reference, &auth).await
        && manifest.layers.first().is_some_and(|layer| layer.digest == packed.digest)
    {
        return Ok(Pushed { reference: reference_text, pushed: false, digest: packed.digest.clone(), manifest_digest });
    }
    let layer = ImageLayer::new(packed.bytes.clone(), CONTENT_MEDIA_TYPE.to_string(), None);
    let config = Config::new(b"{}".to_vec(), CONFIG_MEDIA_TYPE.to_string(), None);
    // Flux shows these as the artifact's origin and revision.
    let annotations = BTreeMap::from([
        ("org.opencontainers.image.source".to_string(), source.to_string()),
        ("org.opencontainers.image.revision".to_string(), packed.digest.clone()),
    ]);
    let mut manifest =
        oci_client::manifest::OciImageManifest::build(std::slice::from_ref(&layer), &config, Some(annotations));
    manifest.artifact_type = None;
    client
        .push(&reference, &[layer], config, &auth, Some(manifest))
        .await
        .map_err(|source| Error::Push { reference: reference_text.clone(), source })?;
    let manifest_digest = client
        .fetch_manifest_digest(&reference, &auth)
        .await
        .map_err(|source| Error::Push { reference: reference_text.clone(), source })?;
    Ok(Pushed { reference: reference_text, pushed: true, digest: packed.digest.clone(), manifest_digest })
}
