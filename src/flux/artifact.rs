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

/// Pushes one packed tree with Flux's media types, unless the tag already points at the
/// same content. The content is streamed to the registry in chunks, so a large artifact
/// (spooled to a temporary file by the packer) is never held in memory whole.
pub async fn push_tree(
    client: &Client,
    registry: &str,
    repository: &str,
    content: &crate::flux::pack::Content,
    digest: &str,
    origin: &str,
) -> Result<Pushed, Error> {
    let reference_text = format!("{registry}/{repository}:{TAG}");
    let reference: Reference =
        reference_text.parse().map_err(|source| Error::Reference { reference: reference_text.clone(), source })?;
    let auth = auth(registry)?;
    if let Ok((manifest, manifest_digest)) = client.pull_image_manifest(&reference, &auth).await
        && manifest.layers.first().is_some_and(|layer| layer.digest == digest)
    {
        return Ok(Pushed { reference: reference_text, pushed: false, digest: digest.to_string(), manifest_digest });
    }
    // Flux shows these as the artifact's origin and revision.
    let annotations = BTreeMap::from([
        ("org.opencontainers.image.source".to_string(), origin.to_string()),
        ("org.opencontainers.image.revision".to_string(), digest.to_string()),
    ]);
    let failed = |source| Error::Push { reference: reference_text.clone(), source };
    client.store_auth_if_needed(reference.resolve_registry(), &auth).await;
    client.push_blob_stream(&reference, chunks(content.clone()), digest, Some(content.len())).await.map_err(failed)?;
    // The manifest describes the streamed layer: built around an empty one, then given its
    // digest and size.
    let config = Config::new(b"{}".to_vec(), CONFIG_MEDIA_TYPE.to_string(), None);
    let placeholder = ImageLayer::new(Vec::new(), CONTENT_MEDIA_TYPE.to_string(), None);
    let mut manifest =
        oci_client::manifest::OciImageManifest::build(std::slice::from_ref(&placeholder), &config, Some(annotations));
    manifest.artifact_type = None;
    manifest.layers[0].digest = digest.to_string();
    manifest.layers[0].size = i64::try_from(content.len()).unwrap_or(i64::MAX);
    client.push_blob(&reference, config.data, &manifest.config.digest).await.map_err(failed)?;
    client.push_manifest(&reference, &manifest.into()).await.map_err(failed)?;
    let manifest_digest = client.fetch_manifest_digest(&reference, &auth).await.map_err(failed)?;
    Ok(Pushed { reference: reference_text, pushed: true, digest: digest.to_string(), manifest_digest })
}

/// The content as a stream of chunks of at most [`PUSH_CHUNK`] bytes, read as they are sent.
fn chunks(
    content: crate::flux::pack::Content,
) -> impl futures_util::Stream<Item = oci_client::errors::Result<bytes::Bytes>> + Send + 'static {
    futures_util::stream::try_unfold(0u64, move |offset| {
        let content = content.clone();
        async move {
            if offset >= content.len() {
                return Ok(None);
            }
            // Sized to what is left, so a small artifact never holds a whole chunk's memory
            // (a hundred pushes at once of kilobyte artifacts would otherwise hold megabytes each).
            let size = usize::try_from(content.len() - offset).unwrap_or(usize::MAX).min(PUSH_CHUNK);
            let read = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0; size];
                let n = content.read_at(offset, &mut buf)?;
                buf.truncate(n);
                Ok::<_, std::io::Error>(buf)
            })
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r)
            .map_err(|e| oci_client::errors::OciDistributionError::GenericError(Some(e.to_string())))?;
            if read.is_empty() {
                return Err(oci_client::errors::OciDistributionError::GenericError(Some(
                    "the artifact ended early".to_string(),
                )));
            }
            let next = offset + read.len() as u64;
            Ok(Some((bytes::Bytes::from(read), next)))
        }
    })
}

/// How much of an artifact is read and sent at a time.
const PUSH_CHUNK: usize = 1 << 20;
