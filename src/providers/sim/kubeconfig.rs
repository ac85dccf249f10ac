//! Kubeconfig files that point at the sim's kube-apiserver, written with kube's own types.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use kube::config::{AuthInfo, Cluster, Context, Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext};

use super::Error;
use super::certs::{Identity, Pki};

/// Writes a kubeconfig with one cluster, one user and one context, all named `context`
/// (the user gets the identity's suffix), referring to the certificate files by path.
pub(super) fn write(path: &Path, context: &str, server: &str, pki: &Pki, who: &Identity) -> Result<(), Error> {
    let user = format!("{context}-{}", who.stem);
    let config = Kubeconfig {
        clusters: vec![NamedCluster {
            name: context.to_string(),
            cluster: Some(Cluster {
                server: Some(server.to_string()),
                certificate_authority: Some(pki.ca_cert().display().to_string()),
                ..Cluster::default()
            }),
            ..NamedCluster::default()
        }],
        auth_infos: vec![NamedAuthInfo {
            name: user.clone(),
            auth_info: Some(AuthInfo {
                client_certificate: Some(pki.client_cert(who).display().to_string()),
                client_key: Some(pki.client_key(who).display().to_string()),
                ..AuthInfo::default()
            }),
            ..NamedAuthInfo::default()
        }],
        contexts: vec![NamedContext {
            name: context.to_string(),
            context: Some(Context {
                cluster: context.to_string(),
                user: Some(user),
                namespace: None,
                ..Context::default()
            }),
            ..NamedContext::default()
        }],
        current_context: Some(context.to_string()),
        api_version: Some("v1".to_string()),
        kind: Some("Config".to_string()),
        ..Kubeconfig::default()
    };
    let text = serde_yaml::to_string(&config).expect("a kubeconfig serialises");
    let write_error = |source| Error::WriteFile { path: path.to_path_buf(), source };
    let temp = path.with_extension("tmp");
    let _ = fs::remove_file(&temp);
    let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temp).map_err(write_error)?;
    file.write_all(text.as_bytes()).map_err(write_error)?;
    fs::rename(&temp, path).map_err(write_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::sim::certs::ADMIN;

    #[test]
    fn kube_reads_what_is_written() {
        let temp = tempfile::tempdir().unwrap();
        let pki = Pki::new(temp.path().join("pki"));
        let path = temp.path().join("kubeconfig");
        write(&path, "devenv-shop", "https://127.0.0.1:6443", &pki, &ADMIN).unwrap();
        let read = Kubeconfig::read_from(&path).unwrap();
        assert_eq!(read.current_context.as_deref(), Some("devenv-shop"));
        let cluster = read.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:6443"));
        let user = read.auth_infos[0].auth_info.as_ref().unwrap();
        assert!(user.client_key.as_deref().unwrap().ends_with("admin.key"));
    }
}
