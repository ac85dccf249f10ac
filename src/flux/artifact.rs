//! OCI artifacts in the environment's registry: the packed trees with Flux's media types and
//! the repository's Helm charts, each pushed only when its content changed.

use std::collections::BTreeMap;

use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::providers::registry;

pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.cncf.flux.config.v1+json";
pub const CONTENT_MEDIA_TYPE: &str = "application/vnd.cncf.flux.content.v1.tar+gzip";
/// The tag devenv pushes trees to; the OCIRepositories follow it.
pub const TAG: &str = "latest";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`{reference}` is not a valid artifact reference")]
    Reference {
        reference: String,
        #[source]
        source: oci_client::ParseError,
    },
    #[error("cannot read the credentials for `{registry}`")]
    Credentials {
        registry: String,
        #[source]
        source: crate::providers::registry::Error,
    },
    #[error("cannot push the artifact to `{reference}`")]
    Push {
        reference: String,
        #[source]
        source: oci_client::errors::OciDistributionError,
    },
}

/// Where a source's artifact lives in the registry: `devenv/<env>/<source>`.
pub fn repository(env: &str, source: &str) -> String {
    format!("devenv/{env}/{source}")
}

/// One blob of an artifact: its bytes and media type.
pub struct Blob<'a> {
    pub bytes: &'a [u8],
    pub media_type: &'a str,
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Pushed {
    pub reference: String,
    /// False when the registry already held the same content.
    pub pushed: bool,
    /// Digest of the content layer.
    pub digest: String,
    /// Digest of the manifest: Flux's revision is `<tag>@<this>`.
    pub manifest_digest: String,
}

/// A client for the registry `HOST[:PORT]`: plain HTTP when it is on this machine
/// (`127.0.0.1:PORT`, as Docker treats it), HTTPS otherwise.
pub fn client(registry: &str) -> Client {
    crate::init_tls();
    let plain = if registry::is_loopback(registry) { vec![registry.to_string()] } else { Vec::new() };
    Client::new(ClientConfig { protocol: ClientProtocol::HttpsExcept(plain), ..Default::default() })
}

/// How to log in to the registry: the user's Docker credentials for it, else anonymously.
fn auth(registry_host: &str) -> Result<RegistryAuth, Error> {
    match registry::credentials(registry_host) {
        Ok(Some(found)) => Ok(RegistryAuth::Basic(found.username, found.password)),
        Ok(None) => Ok(RegistryAuth::Anonymous),
        Err(source) => Err(Error::Credentials { registry: registry_host.to_string(), source }),
    }
}

/// Pushes `content` as `<registry>/<repository>:<tag>` unless the tag already points at the
/// same content.
pub async fn push_if_changed(
    client: &Client,
    registry: &str,
    repository: &str,
    tag: &str,
    content: Blob<'_>,
    config: Blob<'_>,
    annotations: BTreeMap<String, String>,
) -> Result<Pushed, Error> {
    let reference_text = format!("{registry}/{repository}:{tag}");
    let reference: Reference =
        reference_text.parse().map_err(|source| Error::Reference { reference: reference_text.clone(), source })?;
    let digest = crate::flux::pack::digest(content.bytes);
    let auth = auth(registry)?;
    if let Ok((manifest, manifest_digest)) = client.pull_image_manifest(&reference, &auth).await
        && manifest.layers.first().is_some_and(|layer| layer.digest == digest)
    {
        return Ok(Pushed { reference: reference_text, pushed: false, digest, manifest_digest });
    }
    let layer = ImageLayer::new(content.bytes.to_vec(), content.media_type.to_string(), None);
    let config = Config::new(config.bytes.to_vec(), config.media_type.to_string(), None);
    let mut manifest =
        oci_client::manifest::OciImageManifest::build(std::slice::from_ref(&layer), &config, Some(annotations));
    manifest.artifact_type = None;
    let failed = |source| Error::Push { reference: reference_text.clone(), source };
    client.push(&reference, &[layer], config, &auth, Some(manifest)).await.map_err(failed)?;
    let manifest_digest = client.fetch_manifest_digest(&reference, &auth).await.map_err(failed)?;
    Ok(Pushed { reference: reference_text, pushed: true, digest, manifest_digest })
}

/// Pushes one packed tree with Flux's media types.
pub async fn push_tree(
    client: &Client,
    registry: &str,
    repository: &str,
    bytes: &[u8],
    origin: &str,
) -> Result<Pushed, Error> {
    // Flux shows these as the artifact's origin and revision.
    let annotations = BTreeMap::from([
        ("org.opencontainers.image.source".to_string(), origin.to_string()),
        ("org.opencontainers.image.revision".to_string(), crate::flux::pack::digest(bytes)),
    ]);
    let content = Blob { bytes, media_type: CONTENT_MEDIA_TYPE };
    let config = Blob { bytes: b"{}", media_type: CONFIG_MEDIA_TYPE };
    push_if_changed(client, registry, repository, TAG, content, config, annotations).await
}
