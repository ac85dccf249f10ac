//! kubeconfig files, read the way kubectl reads them: `KUBECONFIG` is a list of files joined
//! by `:` (missing ones skipped, the first to set a value wins), else `~/.kube/config`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};

pub const KUBECONFIG_ENV: &str = "KUBECONFIG";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no kubeconfig file found (KUBECONFIG is not set and `~/.kube/config` does not exist)")]
    NotFound,
    #[error("cannot read the kubeconfig `{}`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: KubeconfigError,
    },
    #[error("the kubeconfig `{}` has no context `{context}`", kubeconfig.display())]
    NoContext { context: String, kubeconfig: PathBuf, known: Vec<String> },
    #[error("the kubeconfig `{}` names no current context", kubeconfig.display())]
    NoCurrentContext { kubeconfig: PathBuf, known: Vec<String> },
    #[error("cannot build a Kubernetes client for context `{context}`")]
    Client {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The kubeconfig as kubectl finds it: `KUBECONFIG` as given, else `~/.kube/config`.
pub fn default_location() -> Result<PathBuf, Error> {
    match std::env::var_os(KUBECONFIG_ENV).filter(|v| !v.is_empty()) {
        Some(value) => Ok(PathBuf::from(value)),
        None => dirs::home_dir().map(|home| home.join(".kube").join("config")).ok_or(Error::NotFound),
    }
}

/// Reads and merges the files of `location` (one path, or several joined by `:`).
pub fn read(location: &Path) -> Result<Kubeconfig, Error> {
    let paths: Vec<PathBuf> = std::env::split_paths(&OsString::from(location.as_os_str()))
        .filter(|p| !p.as_os_str().is_empty() && p.exists())
        .collect();
    if paths.is_empty() {
        return Err(Error::NotFound);
    }
    let mut merged = Kubeconfig::default();
    for path in paths {
        let read = Kubeconfig::read_from(&path).map_err(|source| Error::Read { path: path.clone(), source })?;
        merged = merged.merge(read).map_err(|source| Error::Read { path, source })?;
    }
    Ok(merged)
}

/// The context to use (`wanted`, else the current context) and its API server's URL.
pub fn resolve(config: &Kubeconfig, location: &Path, wanted: Option<&str>) -> Result<(String, String), Error> {
    let known: Vec<String> = config.contexts.iter().map(|c| c.name.clone()).collect();
    let context = match wanted.map(str::to_string).or_else(|| config.current_context.clone()) {
        Some(context) => context,
        None => return Err(Error::NoCurrentContext { kubeconfig: location.to_path_buf(), known }),
    };
    let Some(named) = config.contexts.iter().find(|c| c.name == context) else {
        return Err(Error::NoContext { context, kubeconfig: location.to_path_buf(), known });
    };
    let cluster = named.context.as_ref().map(|c| c.cluster.clone()).unwrap_or_default();
    let server = (config.clusters.iter())
        .find(|c| c.name == cluster)
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.server.clone())
        .unwrap_or_default();
    Ok((context, server))
}

/// Only `context` of the kubeconfig at `location`, with its cluster and user, as the current
/// context: a kubeconfig kubectl uses as it is (what `kind get kubeconfig` prints). Files the
/// original names (certificates) are absolute paths.
pub fn extract(location: &Path, context: &str) -> Result<Kubeconfig, Error> {
    let config = read(location)?;
    resolve(&config, location, Some(context))?;
    let named = config.contexts.iter().find(|c| c.name == context).cloned();
    let (cluster, user) = named
        .as_ref()
        .and_then(|c| c.context.as_ref())
        .map(|c| (c.cluster.clone(), c.user.clone().unwrap_or_default()))
        .unwrap_or_default();
    Ok(Kubeconfig {
        clusters: config.clusters.into_iter().filter(|c| c.name == cluster).collect(),
        auth_infos: config.auth_infos.into_iter().filter(|u| u.name == user).collect(),
        contexts: named.into_iter().collect(),
        current_context: Some(context.to_string()),
        kind: Some("Config".to_string()),
        api_version: Some("v1".to_string()),
        ..Default::default()
    })
}

/// A client for `context` of the kubeconfig at `location`.
pub async fn client(location: &Path, context: &str) -> Result<kube::Client, Error> {
    let config = read(location)?;
    resolve(&config, location, Some(context))?;
    let options = KubeConfigOptions { context: Some(context.to_string()), ..Default::default() };
    let client_error =
        |source: Box<dyn std::error::Error + Send + Sync>| Error::Client { context: context.to_string(), source };
    let config = kube::Config::from_custom_kubeconfig(config, &options).await.map_err(|e| client_error(Box::new(e)))?;
    kube::Client::try_from(config).map_err(|e| client_error(Box::new(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_CONTEXTS: &str = "apiVersion: v1\nkind: Config\ncurrent-context: one\nclusters:\n- name: a\n  cluster:\n    server: https://127.0.0.1:6443\n- name: b\n  cluster:\n    server: https://10.0.0.1:443\ncontexts:\n- name: one\n  context:\n    cluster: a\n    user: u\n- name: two\n  context:\n    cluster: b\n    user: u\nusers:\n- name: u\n  user:\n    token: t\n";

    #[test]
    fn a_list_of_files_is_merged_and_missing_ones_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("first");
        std::fs::write(&first, TWO_CONTEXTS).unwrap();
        let location = std::env::join_paths([dir.path().join("missing"), first]).unwrap();
        let config = read(Path::new(&location)).unwrap();
        let location = Path::new(&location);
        assert_eq!(resolve(&config, location, None).unwrap(), ("one".into(), "https://127.0.0.1:6443".into()));
        assert_eq!(resolve(&config, location, Some("two")).unwrap(), ("two".into(), "https://10.0.0.1:443".into()));
        let error = resolve(&config, location, Some("three")).unwrap_err();
        assert!(matches!(error, Error::NoContext { ref known, .. } if known == &["one", "two"]), "{error:?}");
        assert!(matches!(read(&dir.path().join("nothing")), Err(Error::NotFound)));
    }

    #[test]
    fn one_context_is_extracted_with_its_cluster_and_user_as_the_current_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(&path, TWO_CONTEXTS).unwrap();
        let extracted = extract(&path, "two").unwrap();
        assert_eq!(extracted.current_context.as_deref(), Some("two"));
        let names = |v: Vec<String>| v.join(",");
        assert_eq!(names(extracted.contexts.iter().map(|c| c.name.clone()).collect()), "two");
        assert_eq!(names(extracted.clusters.iter().map(|c| c.name.clone()).collect()), "b");
        assert_eq!(names(extracted.auth_infos.iter().map(|u| u.name.clone()).collect()), "u");
        let written = dir.path().join("two");
        std::fs::write(&written, serde_yaml::to_string(&extracted).unwrap()).unwrap();
        let again = read(&written).unwrap();
        assert_eq!(resolve(&again, &written, None).unwrap(), ("two".into(), "https://10.0.0.1:443".into()));
        assert!(matches!(extract(&path, "three"), Err(Error::NoContext { .. })));
    }
}
