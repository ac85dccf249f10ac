//! The ledger of what devenv made for an environment: a 0600 JSON file in the user's state
//! directory, written before anything is created so `down` can always find it again, and the
//! environment's lock ([`lock`]), which commands that change the environment hold.

mod lock;

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::RngExt;
use serde::{Deserialize, Serialize};

use crate::providers::ClusterInfo;
pub use lock::{EnvLock, Holder, LOCK_FILE, PortBook, human};

/// Overrides the state directory (tests, CI).
pub const STATE_DIR_ENV: &str = "DEVENV_STATE_DIR";
const FORMAT_VERSION: u32 = 1;
/// The state file in an environment's directory.
const STATE_FILE: &str = "state.json";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot find a state directory for this user")]
    NoStateDir,
    #[error("cannot read the state file `{}`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the state file `{}` is not valid", path.display())]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write the state file `{}`", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("environment `{env}` belongs to the repository `{}`", other_repo.display())]
    OtherRepo { env: String, other_repo: PathBuf },
    #[error("cannot lock `{}`", path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("environment `{env}` is in use by {}; gave up waiting after {}", lock::describe(holder.as_ref()), lock::human(*waited))]
    Busy { env: String, holder: Option<Holder>, waited: Duration },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub version: u32,
    pub env: String,
    pub repo: PathBuf,
    pub profile: String,
    #[serde(default)]
    pub services: BTreeMap<String, ServiceState>,
    /// The environment's cluster: its provider and how to reach it, so `down` needs no
    /// configuration. Absent with no cluster, and in files written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterInfo>,
    /// Where the environment's Flux objects live, recorded before they are applied, so
    /// `down` removes them with any profile and without devenv.yaml.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flux: Option<FluxPlacement>,
    /// Where in-cluster substitutes live (`substitutes.runtime: cluster`), recorded before
    /// they are created, so `down` finds them without devenv.yaml. Absent for Docker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub substitutes: Option<SubstitutePlacement>,
}

/// The namespace of an environment's in-cluster substitutes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubstitutePlacement {
    pub namespace: String,
}

/// Where an environment's Flux objects live in its cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FluxPlacement {
    /// The namespace of the root Kustomization and devenv's sources.
    pub namespace: String,
    /// Whether that namespace is the environment's own in a shared cluster
    /// (`isolation: namespace`).
    pub shared: bool,
}

impl FluxPlacement {
    pub fn for_config(config: &crate::config::Config) -> Self {
        FluxPlacement { namespace: config.flux_namespace(), shared: config.environment_namespace().is_some() }
    }

    /// The namespace that holds every Flux object of the environment, when it is its own in a
    /// shared cluster: Flux objects are read there alone, which an identity confined to it
    /// may do, rather than in the whole cluster.
    pub fn scope(&self) -> Option<&str> {
        self.shared.then_some(self.namespace.as_str())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceState {
    pub kind: String,
    /// Port name → host port on 127.0.0.1, kept so endpoints stay stable.
    #[serde(default)]
    pub host_ports: BTreeMap<String, u16>,
    /// Generated credentials, by the catalogue's secret names.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// Generated values of the service's secrets and parameters (`generate: password`), by
    /// resource name, so every `up` makes them again the same.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub generated: BTreeMap<String, String>,
}

impl State {
    pub fn new(env: &str, repo: &Path, profile: &str) -> Self {
        State {
            version: FORMAT_VERSION,
            env: env.to_string(),
            repo: repo.to_path_buf(),
            profile: profile.to_string(),
            services: BTreeMap::new(),
            cluster: None,
            flux: None,
            substitutes: None,
        }
    }
}

/// A random password: 24 letters and digits (safe in URLs and shell).
pub fn generate_secret() -> String {
    rand::rng().sample_iter(rand::distr::Alphanumeric).take(24).map(char::from).collect()
}

/// The directory holding one directory per environment.
pub fn envs_dir() -> Result<PathBuf, Error> {
    let root = match std::env::var_os(STATE_DIR_ENV) {
        Some(dir) => PathBuf::from(dir),
        None => dirs::state_dir().or_else(dirs::data_local_dir).ok_or(Error::NoStateDir)?.join("devenv"),
    };
    Ok(root.join("envs"))
}

/// The state directory of one environment.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn for_env(env: &str) -> Result<Self, Error> {
        Ok(Store { dir: envs_dir()?.join(env) })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn file(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    pub fn load(&self) -> Result<Option<State>, Error> {
        let path = self.file();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|source| Error::Corrupt { path, source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::Read { path, source }),
        }
    }

    /// The environment's state, or a new one; refuses an environment of another repository.
    pub fn load_for(&self, env: &str, repo: &Path, profile: &str) -> Result<State, Error> {
        match self.load()? {
            Some(state) if state.repo != repo => Err(Error::OtherRepo { env: env.to_string(), other_repo: state.repo }),
            Some(mut state) => {
                state.profile = profile.to_string();
                Ok(state)
            }
            None => Ok(State::new(env, repo, profile)),
        }
    }

    /// Writes the state atomically, readable by the user only: a temporary file, flushed to
    /// disk, renamed over the old one, and the directory flushed so the rename survives a
    /// crash. Readers see the old file or the new one, never a part.
    pub fn save(&self, state: &State) -> Result<(), Error> {
        let path = self.file();
        let write_error = |source| Error::Write { path: path.clone(), source };
        fs::create_dir_all(&self.dir).map_err(write_error)?;
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700)).map_err(write_error)?;
        let temp = self.dir.join(format!("{STATE_FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(state).expect("state serialises");
        let written = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)
            .and_then(|mut file| file.write_all(&bytes).and_then(|()| file.sync_all()))
            .and_then(|()| fs::rename(&temp, &path));
        if let Err(error) = written {
            // A full disk leaves a part of the new file: the old one stays whole, and so does
            // the directory, for `down` (which needs no space to read and remove).
            let _ = fs::remove_file(&temp);
            return Err(write_error(error));
        }
        fs::File::open(&self.dir).and_then(|dir| dir.sync_all()).map_err(write_error)
    }

    /// Removes the environment's whole state directory (`down --purge`), lock file included
    /// (a command waiting for the lock then locks a new one).
    pub fn remove(&self) -> Result<(), Error> {
        match fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::Write { path: self.dir.clone(), source: e }),
            _ => Ok(()),
        }
    }

    /// Removes the directory when the lock file is all it holds (`down` of an environment
    /// that has nothing else here), so a lock leaves no trace.
    pub fn remove_if_only_locked(&self) -> Result<(), Error> {
        let only_lock = fs::read_dir(&self.dir)
            .map(|entries| entries.flatten().all(|entry| entry.file_name() == LOCK_FILE))
            .unwrap_or(false);
        if only_lock { self.remove() } else { Ok(()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_with_private_permissions_and_reloads() {
        let temp = tempfile::tempdir().unwrap();
        let store = Store { dir: temp.path().join("envs").join("shop") };
        assert_eq!(store.load().unwrap(), None);
        let mut state = State::new("shop", Path::new("/repo"), "standalone");
        state.services.insert(
            "db".into(),
            ServiceState {
                kind: "rds-mariadb".into(),
                host_ports: BTreeMap::from([("sql".into(), 40000)]),
                secrets: BTreeMap::from([("password".into(), generate_secret())]),
                ..Default::default()
            },
        );
        store.save(&state).unwrap();
        let mode = fs::metadata(store.file()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = fs::metadata(store.dir()).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
        assert_eq!(store.load().unwrap(), Some(state));
    }

    #[test]
    fn the_cluster_is_recorded_and_read_back() {
        use crate::config::profile::Provider;
        use crate::providers::Registry;
        let temp = tempfile::tempdir().unwrap();
        let store = Store { dir: temp.path().join("shop") };
        let mut state = State::new("shop", Path::new("/repo"), "shared");
        state.cluster = Some(ClusterInfo {
            provider: Provider::Existing,
            kubeconfig: PathBuf::from("/home/me/.kube/config:/home/me/.kube/other"),
            context: "staging".into(),
            api_server: "https://10.0.0.1:443".into(),
            registry: Registry { host: "localhost:5001".into(), from_cluster: "registry.internal:5000".into() },
        });
        store.save(&state).unwrap();
        let text = fs::read_to_string(store.file()).unwrap();
        assert!(text.contains("\"provider\": \"existing\"") && text.contains("\"fromCluster\""), "{text}");
        assert_eq!(store.load().unwrap(), Some(state));
    }

    #[test]
    fn a_state_file_of_the_previous_format_is_read() {
        let temp = tempfile::tempdir().unwrap();
        let store = Store { dir: temp.path().to_path_buf() };
        let old = r#"{
  "version": 1,
  "env": "shop",
  "repo": "/repo",
  "profile": "sim",
  "services": {
    "orders-db": {"kind": "rds-mariadb", "hostPorts": {"sql": 40213}, "secrets": {"password": "abc"}}
  }
}"#;
        fs::write(store.file(), old).unwrap();
        let state = store.load().unwrap().unwrap();
        assert_eq!(state.cluster, None);
        assert_eq!(state.services["orders-db"].host_ports["sql"], 40213);
        assert_eq!(state.profile, "sim");
    }

    #[test]
    fn refuses_an_environment_of_another_repository() {
        let temp = tempfile::tempdir().unwrap();
        let store = Store { dir: temp.path().join("shop") };
        store.save(&State::new("shop", Path::new("/one"), "standalone")).unwrap();
        let error = store.load_for("shop", Path::new("/two"), "standalone").unwrap_err();
        assert!(matches!(error, Error::OtherRepo { ref other_repo, .. } if other_repo == Path::new("/one")));
        assert!(store.load_for("shop", Path::new("/one"), "sim").is_ok());
    }

    #[test]
    fn a_write_on_a_full_disk_keeps_the_old_file_and_leaves_no_part_behind() {
        let temp = tempfile::tempdir().unwrap();
        let store = Store { dir: temp.path().join("shop") };
        let old = State::new("shop", Path::new("/repo"), "standalone");
        store.save(&old).unwrap();
        // The temporary file leads to /dev/full: every write fails with ENOSPC.
        std::os::unix::fs::symlink("/dev/full", store.dir().join("state.json.tmp")).unwrap();
        let mut new = old.clone();
        new.profile = "sim".into();
        let error = store.save(&new).unwrap_err();
        let Error::Write { source, .. } = &error else { panic!("{error:?}") };
        assert_eq!(source.kind(), io::ErrorKind::StorageFull, "{source}");
        assert_eq!(store.load().unwrap(), Some(old), "the old state is whole");
        let left: Vec<_> = fs::read_dir(store.dir()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(left, ["state.json"], "no part of the new file is left");
        store.save(&new).unwrap();
        assert_eq!(store.load().unwrap(), Some(new));
    }

    #[test]
    fn reports_a_corrupt_file() {
        let temp = tempfile::tempdir().unwrap();
        let store = Store { dir: temp.path().to_path_buf() };
        fs::write(store.file(), "{not json").unwrap();
        assert!(matches!(store.load(), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn secrets_are_random_and_url_safe() {
        let (a, b) = (generate_secret(), generate_secret());
        assert_ne!(a, b);
        assert_eq!(a.len(), 24);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
