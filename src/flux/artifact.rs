//! OCI artifacts: deterministic tar.gz archives and their digests (spooled to an unnamed
//! temporary file past [`SPOOL_IN_MEMORY`]), and their pushes to the environment's registry,
//! the packed trees with Flux's media types and the repository's Helm charts, each pushed only
//! when its content changed.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use flate2::Compression;
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest, Sha256};

use super::files::{Error as FileError, MAX_FILE_SIZE};
use crate::providers::registry;

pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.cncf.flux.config.v1+json";
pub const CONTENT_MEDIA_TYPE: &str = "application/vnd.cncf.flux.content.v1.tar+gzip";
/// The tag devenv pushes trees to; the OCIRepositories follow it.
pub const TAG: &str = "latest";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`{reference}` is not a valid artifact reference: {reason}")]
    Reference { reference: String, reason: &'static str },
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

/// `<registry>/<repository>:<tag>` as a reference and as text, checked against the
/// distribution spec's grammar. Built from its parts rather than parsed: the parser's regular
/// expression alone takes 8 MB to compile. A registry given with a path (`host/team`) puts the
/// path in front of the repository, as the parser would.
pub fn reference(registry: &str, repository: &str, tag: &str) -> Result<(Reference, String), Error> {
    let text = format!("{registry}/{repository}:{tag}");
    let invalid = |reason| Error::Reference { reference: text.clone(), reason };
    let (host, prefix) = registry.split_once('/').unwrap_or((registry, ""));
    let name = match prefix.trim_matches('/') {
        "" => repository.to_string(),
        prefix => format!("{prefix}/{repository}"),
    };
    if host.is_empty() || !host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']')) {
        return Err(invalid("the registry must be a host name or address, with an optional port"));
    }
    if name.len() > 255 || !name.split('/').all(is_path_component) {
        return Err(invalid(
            "a repository is lowercase letters and digits in parts separated by `/`, `.`, `_`, `__` or `-`",
        ));
    }
    let tag_ok = tag.len() <= 128
        && tag.chars().next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && tag.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !tag_ok {
        return Err(invalid("a tag is up to 128 letters, digits, `_`, `.` or `-`, not starting with `.` or `-`"));
    }
    Ok((Reference::with_tag(host.to_string(), name, tag.to_string()), text))
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, the distribution spec's path component.
pub fn is_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !bytes.first().is_some_and(alnum) || !bytes.last().is_some_and(alnum) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(&bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(&bytes[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        if !(separator == "." || separator == "_" || separator == "__" || separator.bytes().all(|b| b == b'-')) {
            return false;
        }
    }
    true
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
    let (reference, reference_text) = reference(registry, repository, tag)?;
    let digest = digest(content.bytes);
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
    content: &Content,
    digest: &str,
    origin: &str,
) -> Result<Pushed, Error> {
    let (reference, reference_text) = reference(registry, repository, TAG)?;
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
    content: Content,
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

/// `sha256:<hex>` of some bytes.
pub fn digest(bytes: &[u8]) -> String {
    let hex: String = Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Artifacts up to this size stay in memory; larger ones go to an unnamed temporary file, so
/// packing takes the same memory whatever the size of the files.
pub const SPOOL_IN_MEMORY: usize = 4 << 20;

/// The bytes of a packed artifact, shared cheaply: in memory, or in an unnamed temporary
/// file read at offsets (so clones read independently).
#[derive(Debug, Clone)]
pub struct Content {
    data: Data,
    len: u64,
}

#[derive(Debug, Clone)]
enum Data {
    Memory(std::sync::Arc<Vec<u8>>),
    File(std::sync::Arc<fs::File>),
}

impl Content {
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the bytes are in memory (small artifacts) rather than in a temporary file.
    pub fn in_memory(&self) -> bool {
        matches!(self.data, Data::Memory(_))
    }

    /// Up to `buf.len()` bytes from `offset`; 0 at the end.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        match &self.data {
            Data::Memory(bytes) => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX).min(bytes.len());
                let n = buf.len().min(bytes.len() - start);
                buf[..n].copy_from_slice(&bytes[start..start + n]);
                Ok(n)
            }
            Data::File(file) => std::os::unix::fs::FileExt::read_at(file.as_ref(), buf, offset),
        }
    }

    /// All the bytes (tests, small artifacts).
    pub fn to_vec(&self) -> io::Result<Vec<u8>> {
        let mut out = vec![0; usize::try_from(self.len).map_err(io::Error::other)?];
        let mut done = 0;
        while done < out.len() {
            match self.read_at(done as u64, &mut out[done..])? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => done += n,
            }
        }
        Ok(out)
    }
}

/// Where an archive is written: memory up to [`SPOOL_IN_MEMORY`], then an unnamed temporary
/// file; the digest is computed on the way.
struct Spool {
    memory: Vec<u8>,
    file: Option<fs::File>,
    hasher: Sha256,
    len: u64,
}

impl Spool {
    fn new() -> Self {
        Spool { memory: Vec::new(), file: None, hasher: Sha256::new(), len: 0 }
    }

    fn finish(self) -> io::Result<(Content, String)> {
        let hex: String = self.hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
        let digest = format!("sha256:{hex}");
        let data = match self.file {
            Some(file) => Data::File(std::sync::Arc::new(file)),
            None => Data::Memory(std::sync::Arc::new(self.memory)),
        };
        Ok((Content { data, len: self.len }, digest))
    }
}

impl Write for Spool {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.file.is_none() && self.memory.len() + buf.len() > SPOOL_IN_MEMORY {
            let mut file = tempfile::tempfile()?;
            file.write_all(&self.memory)?;
            self.memory = Vec::new();
            self.file = Some(file);
        }
        match &mut self.file {
            Some(file) => file.write_all(buf)?,
            None => self.memory.extend_from_slice(buf),
        }
        self.hasher.update(buf);
        self.len += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(file) => file.flush(),
            None => Ok(()),
        }
    }
}

/// One entry of a packed tree: its content in memory (rewritten by the overlay), or a file
/// streamed from disk.
pub enum Entry<'a> {
    Memory(&'a [u8]),
    Disk(PathBuf),
}

/// A deterministic tar.gz of a tree's `(name, raw name, entry, executable)` entries, in the
/// order given, with its digest. Files on disk are streamed (after checking their size
/// against [`MAX_FILE_SIZE`]), and the archive spools to a temporary file past
/// [`SPOOL_IN_MEMORY`], so memory stays flat whatever the files' sizes. A name that is not
/// UTF-8 is written byte for byte, as Flux's own packer would.
pub fn archive_tree<'a>(
    entries: impl Iterator<Item = (&'a str, Option<&'a PathBuf>, Entry<'a>, bool)>,
) -> Result<(Content, String), FileError> {
    let encoder = flate2::GzBuilder::new().mtime(0).write(Spool::new(), Compression::default());
    let mut archive = tar::Builder::new(encoder);
    archive.mode(tar::HeaderMode::Deterministic);
    for (name, raw, entry, executable) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mode(if executable { 0o755 } else { 0o644 });
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        let path: &Path = raw.map(PathBuf::as_path).unwrap_or(Path::new(name));
        match entry {
            Entry::Memory(content) => {
                header.set_size(content.len() as u64);
                archive.append_data(&mut header, path, content).map_err(FileError::Write)?;
            }
            Entry::Disk(file) => {
                let read_error = |source| FileError::Read { path: file.clone(), source };
                let opened = fs::File::open(&file).map_err(read_error)?;
                let size = opened.metadata().map_err(read_error)?.len();
                if size > MAX_FILE_SIZE {
                    return Err(FileError::TooLarge { path: name.to_string(), size });
                }
                header.set_size(size);
                // The size in the header is what is copied: a file that grows meanwhile is cut.
                archive.append_data(&mut header, path, io::Read::take(opened, size)).map_err(FileError::Write)?;
            }
        }
    }
    let encoder = archive.into_inner().map_err(FileError::Write)?;
    encoder.finish().map_err(FileError::Write)?.finish().map_err(FileError::Write)
}

/// A deterministic tar.gz of `(path, content, executable)` entries, in the order given.
pub fn archive<'a>(entries: impl Iterator<Item = (&'a str, &'a [u8], bool)>) -> Result<Vec<u8>, FileError> {
    let encoder = flate2::GzBuilder::new().mtime(0).write(Vec::new(), Compression::default());
    let mut archive = tar::Builder::new(encoder);
    archive.mode(tar::HeaderMode::Deterministic);
    for (path, content, executable) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(if executable { 0o755 } else { 0o644 });
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        archive.append_data(&mut header, path, content).map_err(FileError::Write)?;
    }
    let mut encoder = archive.into_inner().map_err(FileError::Write)?;
    encoder.flush().map_err(FileError::Write)?;
    encoder.finish().map_err(FileError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reference_built_from_parts_is_the_one_the_parser_gives() {
        for (registry, repository, tag) in [
            ("127.0.0.1:5000", "devenv/dev/devenv-ks-apps", "latest"),
            ("kind-devenv-dev-registry:5000", "devenv/pr-12-platform/devenv-source", "latest"),
            ("localhost:5000", "charts/loans", "1.2.3_build.4"),
            ("123456789012.dkr.ecr.eu-west-2.amazonaws.com", "team/previews/devenv-source", "latest"),
            ("registry.example.com/team", "a.b__c---d/e", "v1"),
        ] {
            let (built, text) = reference(registry, repository, tag).unwrap();
            let parsed: Reference = text.parse().unwrap();
            assert_eq!(built, parsed, "{text}");
        }
    }

    #[test]
    fn a_reference_the_registry_would_refuse_is_an_error_that_says_why() {
        for (registry, repository, tag, why) in [
            ("127.0.0.1:5000", "Charts/loans", "1.0.0", "lowercase"),
            ("127.0.0.1:5000", "charts//loans", "1.0.0", "lowercase"),
            ("127.0.0.1:5000", "charts/-loans", "1.0.0", "lowercase"),
            ("127.0.0.1:5000", "charts/lo.-ans", "1.0.0", "lowercase"),
            ("127.0.0.1:5000", "charts/loans", ".1", "tag"),
            ("127.0.0.1:5000", "charts/loans", "1+build", "tag"),
            ("", "charts/loans", "1.0.0", "host name"),
            ("reg istry", "charts/loans", "1.0.0", "host name"),
        ] {
            let error = reference(registry, repository, tag).unwrap_err().to_string();
            assert!(error.contains(why) && error.contains(repository), "{registry} {repository} {tag}: {error}");
            let text = format!("{registry}/{repository}:{tag}");
            assert!(text.parse::<Reference>().is_err() || registry.contains(' ') || registry.is_empty(), "{text}");
        }
    }
}
