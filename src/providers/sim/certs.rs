//! The cluster's certificates, made with rcgen once per environment and kept in `sim/pki/`.
//!
//! One CA signs a serving certificate (used by kube-apiserver, kube-controller-manager,
//! kube-scheduler and kwok, all on 127.0.0.1), etcd's certificate (its clients and its peer
//! port: etcd asks every client for a certificate of this CA, so no other local user reads the
//! cluster's Secrets from it) and one client certificate per identity. The service-account
//! tokens are signed with a separate key pair.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::Error;

/// Names the serving certificate answers to: loopback, and the in-cluster names of the
/// `kubernetes` Service (first IP of the service range 10.0.0.0/24).
const SERVING_NAMES: &[&str] = &[
    "127.0.0.1",
    "localhost",
    "10.0.0.1",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

/// A client identity: file stem, common name (user) and organisation (group).
pub(super) struct Identity {
    pub stem: &'static str,
    pub user: &'static str,
    pub group: Option<&'static str>,
}

/// Cluster admin, used by devenv, kubectl, kwok and the Flux controllers (as the upstream
/// Flux manifests bind them to cluster-admin).
pub(super) const ADMIN: Identity = Identity { stem: "admin", user: "admin", group: Some("system:masters") };
/// The identities the RBAC bootstrap policy has roles for.
pub(super) const CONTROLLER_MANAGER: Identity =
    Identity { stem: "kube-controller-manager", user: "system:kube-controller-manager", group: None };
pub(super) const SCHEDULER: Identity = Identity { stem: "kube-scheduler", user: "system:kube-scheduler", group: None };
/// kube-apiserver as etcd's client.
pub(super) const ETCD_CLIENT: Identity =
    Identity { stem: "apiserver-etcd-client", user: "kube-apiserver-etcd-client", group: None };
const CLIENTS: [&Identity; 4] = [&ADMIN, &CONTROLLER_MANAGER, &SCHEDULER, &ETCD_CLIENT];
/// Names etcd's certificate answers to: it listens on loopback only.
const ETCD_NAMES: &[&str] = &["127.0.0.1", "localhost"];

/// Paths of the files in `sim/pki/`.
#[derive(Debug, Clone)]
pub(super) struct Pki {
    dir: PathBuf,
}

impl Pki {
    pub fn new(dir: PathBuf) -> Self {
        Pki { dir }
    }

    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    pub fn serving_cert(&self) -> PathBuf {
        self.dir.join("serving.crt")
    }
    pub fn serving_key(&self) -> PathBuf {
        self.dir.join("serving.key")
    }
    /// etcd's certificate, for serving its clients and for its peer port (server and client).
    pub fn etcd_cert(&self) -> PathBuf {
        self.dir.join("etcd.crt")
    }
    pub fn etcd_key(&self) -> PathBuf {
        self.dir.join("etcd.key")
    }
    pub fn client_cert(&self, who: &Identity) -> PathBuf {
        self.dir.join(format!("{}.crt", who.stem))
    }
    pub fn client_key(&self, who: &Identity) -> PathBuf {
        self.dir.join(format!("{}.key", who.stem))
    }
    pub fn sa_key(&self) -> PathBuf {
        self.dir.join("sa.key")
    }
    pub fn sa_pub(&self) -> PathBuf {
        self.dir.join("sa.pub")
    }

    fn all_files(&self) -> Vec<PathBuf> {
        let mut files = vec![
            self.ca_cert(),
            self.ca_key(),
            self.serving_cert(),
            self.serving_key(),
            self.etcd_cert(),
            self.etcd_key(),
            self.sa_key(),
            self.sa_pub(),
        ];
        for who in CLIENTS {
            files.push(self.client_cert(who));
            files.push(self.client_key(who));
        }
        files
    }

    /// Keeps a complete set of files; otherwise makes a new CA and everything it signs.
    /// Returns whether new files were made.
    pub fn ensure(&self) -> Result<bool, Error> {
        if self.all_files().iter().all(|f| f.is_file()) {
            return Ok(false);
        }
        fs::create_dir_all(&self.dir).map_err(|source| Error::CreateDir { path: self.dir.clone(), source })?;
        self.generate()?;
        Ok(true)
    }

    fn generate(&self) -> Result<(), Error> {
        let cert_error = |what: &str| {
            let what = what.to_string();
            move |source| Error::Certificate { what, source }
        };

        let ca_key = KeyPair::generate().map_err(cert_error("CA key"))?;
        let mut ca_params = CertificateParams::default();
        ca_params.distinguished_name = name("devenv-sim-ca", None);
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca_cert = ca_params.self_signed(&ca_key).map_err(cert_error("CA certificate"))?;
        write_private(&self.ca_key(), &ca_key.serialize_pem())?;
        write_public(&self.ca_cert(), &ca_cert.pem())?;
        let issuer = Issuer::new(ca_params, ca_key);

        let serving_key = KeyPair::generate().map_err(cert_error("serving key"))?;
        let names: Vec<String> = SERVING_NAMES.iter().map(|s| s.to_string()).collect();
        let mut serving = CertificateParams::new(names).map_err(cert_error("serving names"))?;
        serving.distinguished_name = name("kube-apiserver", None);
        serving.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        serving.use_authority_key_identifier_extension = true;
        let serving_cert = serving.signed_by(&serving_key, &issuer).map_err(cert_error("serving certificate"))?;
        write_private(&self.serving_key(), &serving_key.serialize_pem())?;
        write_public(&self.serving_cert(), &serving_cert.pem())?;

        let etcd_key = KeyPair::generate().map_err(cert_error("etcd key"))?;
        let names: Vec<String> = ETCD_NAMES.iter().map(|s| s.to_string()).collect();
        let mut etcd = CertificateParams::new(names).map_err(cert_error("etcd names"))?;
        etcd.distinguished_name = name("etcd", None);
        etcd.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        // The peer port dials itself as a client too.
        etcd.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        etcd.use_authority_key_identifier_extension = true;
        let etcd_cert = etcd.signed_by(&etcd_key, &issuer).map_err(cert_error("etcd certificate"))?;
        write_private(&self.etcd_key(), &etcd_key.serialize_pem())?;
        write_public(&self.etcd_cert(), &etcd_cert.pem())?;

        for who in CLIENTS {
            let key = KeyPair::generate().map_err(cert_error("client key"))?;
            let mut params = CertificateParams::default();
            params.distinguished_name = name(who.user, who.group);
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            params.use_authority_key_identifier_extension = true;
            let cert = params
                .signed_by(&key, &issuer)
                .map_err(cert_error(&format!("client certificate of `{}`", who.user)))?;
            write_private(&self.client_key(who), &key.serialize_pem())?;
            write_public(&self.client_cert(who), &cert.pem())?;
        }

        let sa = KeyPair::generate().map_err(cert_error("service-account signing key"))?;
        write_private(&self.sa_key(), &sa.serialize_pem())?;
        write_public(&self.sa_pub(), &sa.public_key_pem())?;
        Ok(())
    }
}

fn name(common: &str, organisation: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common);
    if let Some(org) = organisation {
        dn.push(DnType::OrganizationName, org);
    }
    dn
}

fn write_private(path: &Path, text: &str) -> Result<(), Error> {
    write_mode(path, text, 0o600)
}

fn write_public(path: &Path, text: &str) -> Result<(), Error> {
    write_mode(path, text, 0o644)
}

fn write_mode(path: &Path, text: &str, mode: u32) -> Result<(), Error> {
    let write_error = |source| Error::WriteFile { path: path.to_path_buf(), source };
    let _ = fs::remove_file(path);
    let mut file = OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(write_error)?;
    file.write_all(text.as_bytes()).map_err(write_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn makes_a_complete_set_once_with_private_keys() {
        let temp = tempfile::tempdir().unwrap();
        let pki = Pki::new(temp.path().join("pki"));
        assert!(pki.ensure().unwrap());
        assert!(!pki.ensure().unwrap(), "a complete set is kept");
        for file in pki.all_files() {
            let text = fs::read_to_string(&file).unwrap();
            assert!(text.starts_with("-----BEGIN "), "{}", file.display());
        }
        let mode = fs::metadata(pki.ca_key()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        fs::remove_file(pki.sa_pub()).unwrap();
        assert!(pki.ensure().unwrap(), "an incomplete set is made anew");
    }
}
