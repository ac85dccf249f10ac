//! The environment's OCI registry: two addresses, never one string (KEP-1755's `host` and
//! `hostFromClusterNetwork`), and the credentials this machine pushes with, from the user's
//! Docker configuration.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use base64::Engine;
use serde::{Deserialize, Serialize};

/// Overrides the directory of the Docker configuration, as for the `docker` CLI.
pub const DOCKER_CONFIG_ENV: &str = "DOCKER_CONFIG";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the Docker configuration `{}`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the Docker configuration `{}` is not valid", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("the credentials for `{registry}` in `{}` are not base64 `user:password`", path.display())]
    Auth { registry: String, path: PathBuf },
    #[error("the credential helper `docker-credential-{helper}` gave no credentials for `{registry}`: {reason}")]
    Helper { helper: String, registry: String, reason: String },
}

/// Where the environment's registry is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Registry {
    /// `HOST[:PORT]` this machine pushes to.
    pub host: String,
    /// `HOST[:PORT]` the cluster pulls from (`{{ registry }}` in the overlay).
    pub from_cluster: String,
}

impl Registry {
    /// A registry both sides reach under the same name.
    pub fn same(address: &str) -> Self {
        Registry { host: address.to_string(), from_cluster: address.to_string() }
    }
}

/// Whether the registry is on this machine; such registries are spoken to in plain HTTP,
/// as Docker does.
pub fn is_loopback(address: &str) -> bool {
    let host = match address.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => address.split(':').next().unwrap_or_default(),
    };
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `user` and `password` for a registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <hidden>)", self.username)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default)]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default)]
    creds_store: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
}

/// The Docker configuration file: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub fn docker_config_path() -> Option<PathBuf> {
    match std::env::var_os(DOCKER_CONFIG_ENV).filter(|v| !v.is_empty()) {
        Some(dir) => Some(PathBuf::from(dir).join("config.json")),
        None => dirs::home_dir().map(|home| home.join(".docker").join("config.json")),
    }
}

/// The registry part of an `auths` key: `https://ghcr.io/v2/` → `ghcr.io`.
fn server_of(key: &str) -> &str {
    let without_scheme = key.split_once("://").map(|(_, rest)| rest).unwrap_or(key);
    without_scheme.split('/').next().unwrap_or_default()
}

/// The credentials for pushing to `registry` (`HOST[:PORT]`): a credential helper named for
/// it (`credHelpers`), else its `auths` entry (base64 `user:password`), else the default
/// helper (`credsStore`); `None` when the Docker configuration has none (anonymous).
pub fn credentials(registry: &str) -> Result<Option<Credentials>, Error> {
    match docker_config_path() {
        Some(path) => credentials_in(path, registry),
        None => Ok(None),
    }
}

/// [`credentials`] from the Docker configuration at `path`.
pub fn credentials_in(path: PathBuf, registry: &str) -> Result<Option<Credentials>, Error> {
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(Error::Read { path, source }),
    };
    let config: DockerConfig =
        serde_json::from_slice(&text).map_err(|source| Error::Parse { path: path.clone(), source })?;
    if let Some((_, helper)) = config.cred_helpers.iter().find(|(key, _)| server_of(key) == registry) {
        return helper_credentials(helper, registry).map(Some);
    }
    if let Some((_, entry)) = config.auths.iter().find(|(key, _)| server_of(key) == registry)
        && let Some(auth) = &entry.auth
    {
        let auth_error = || Error::Auth { registry: registry.to_string(), path: path.clone() };
        let decoded = base64::engine::general_purpose::STANDARD.decode(auth.trim()).map_err(|_| auth_error())?;
        let decoded = String::from_utf8(decoded).map_err(|_| auth_error())?;
        let (username, password) = decoded.split_once(':').ok_or_else(auth_error)?;
        return Ok(Some(Credentials { username: username.to_string(), password: password.to_string() }));
    }
    match &config.creds_store {
        // The default store answers for every registry, often with nothing for this one.
        Some(helper) => Ok(helper_credentials(helper, registry).ok()),
        None => Ok(None),
    }
}

/// `docker-credential-HELPER get`, given the registry on stdin, answers
/// `{"Username": …, "Secret": …}`.
fn helper_credentials(helper: &str, registry: &str) -> Result<Credentials, Error> {
    let failed = |reason: String| Error::Helper { helper: helper.to_string(), registry: registry.to_string(), reason };
    let mut child = Command::new(format!("docker-credential-{helper}"))
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(registry.as_bytes()).map_err(|e| failed(e.to_string()))?;
    }
    let output = child.wait_with_output().map_err(|e| failed(e.to_string()))?;
    if !output.status.success() {
        return Err(failed(String::from_utf8_lossy(&output.stdout).trim().to_string()));
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Answer {
        username: String,
        secret: String,
    }
    let answer: Answer = serde_json::from_slice(&output.stdout).map_err(|e| failed(e.to_string()))?;
    Ok(Credentials { username: answer.username, password: answer.secret })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_are_recognised() {
        for address in ["127.0.0.1:5000", "localhost:5001", "[::1]:5000", "127.0.0.1"] {
            assert!(is_loopback(address), "{address}");
        }
        for address in ["ghcr.io", "registry.example.com:5000", "10.0.0.1:5000"] {
            assert!(!is_loopback(address), "{address}");
        }
    }

    #[test]
    fn auths_keys_are_matched_by_their_server() {
        assert_eq!(server_of("https://ghcr.io/v2/"), "ghcr.io");
        assert_eq!(server_of("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(server_of("http://localhost:5001"), "localhost:5001");
    }

    #[test]
    fn auths_give_base64_user_and_password() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        // "ci:s3cret:with-colon"
        let auth = base64::engine::general_purpose::STANDARD.encode("ci:s3cret:with-colon");
        let text =
            format!(r#"{{"auths": {{"https://ghcr.io": {{"auth": "{auth}"}}, "bad.example": {{"auth": "%%%"}}}}}}"#);
        std::fs::write(&path, text).unwrap();
        let found = credentials_in(path.clone(), "ghcr.io").unwrap().unwrap();
        assert_eq!((found.username.as_str(), found.password.as_str()), ("ci", "s3cret:with-colon"));
        assert_eq!(credentials_in(path.clone(), "quay.io").unwrap(), None);
        assert!(matches!(credentials_in(path.clone(), "bad.example"), Err(Error::Auth { .. })));
        assert_eq!(credentials_in(dir.path().join("none.json"), "ghcr.io").unwrap(), None);
    }
}
