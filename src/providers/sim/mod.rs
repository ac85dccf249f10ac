//! The `sim` provider: a real Kubernetes control plane with real Flux controllers, run as
//! local processes.
//!
//! `sim/build.sh` builds etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
//! kwok, source-controller, kustomize-controller, helm-controller and an OCI registry from
//! their Go modules at the versions pinned in `sim/versions.env`, into a cache directory
//! named after those pins ([`binaries`]). [`Sim::up`] boots them for one environment:
//! certificates, ports on 127.0.0.1, kubeconfigs, then each process in order with a
//! readiness check and a deadline, then a simulated node, the Flux CRDs and the
//! `flux-system` namespace. kwok plays the kubelet: its stages (`sim/kwok/`) make the node
//! Ready and pods Running and Ready, so Deployments become Available without containers.
//!
//! Everything lives in `<env state dir>/sim/`:
//!
//! ```text
//! cluster.json   ports, context, binaries (written before any process starts)
//! kubeconfig     admin access, context `devenv-<env>` (KUBECONFIG=… kubectl works)
//! pki/           CA, serving and client certificates, service-account keys
//! kubeconfigs/   the controller-manager's and the scheduler's own identities
//! config/        kwok stages, registry configuration
//! run/           one pid file per process, plus the watchdog's
//! logs/          one log per process (the previous boot's as NAME.previous.log)
//! data/          etcd, registry storage, source-controller artifacts (kept by `down`)
//! ```
//!
//! Processes are detached from the command that starts them (a `devenv up` exits while the
//! cluster runs on) yet never orphaned: see [`process`] for the watchdog that stops them all
//! when an `up` crashes, or when the owner of a [`Lifetime::Owned`] cluster exits.

mod boot;
mod certs;
mod cluster;
mod components;
mod kubeconfig;
mod probe;
mod process;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::ports;
use crate::providers::{ClusterAction, ClusterIntent};
use crate::ui::{Reporter, ReporterExt, Status};
pub use cluster::SimCluster;
pub(crate) use components::KWOK_NODE_ANNOTATION;
use components::{Component, HeldPorts, Ports, PortsExt};
use process::{Pid, Watchdog};

/// The build script, run by [`build`] (and by hand: `bash sim/build.sh`).
pub const BUILD_SCRIPT: &str = include_str!("../../../sim/build.sh");
/// The pinned versions; the cache directory is named after the hash of these bytes.
pub const VERSIONS: &str = include_str!("../../../sim/versions.env");
/// Overrides the cache root (default: the user's cache directory + `/devenv`).
pub const CACHE_DIR_ENV: &str = "DEVENV_CACHE_DIR";
/// Every binary a complete build has, in `bin/`.
pub const BINARIES: [&str; 9] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "source-controller",
    "kustomize-controller",
    "helm-controller",
    "registry",
];

/// Seconds between SIGTERM and SIGKILL in `down`.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// The record's format.
const RECORD_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the sim binaries are not built (expected in `{}`)", dir.display())]
    NotBuilt { dir: PathBuf },
    #[error("cannot find a cache directory for this user (set {CACHE_DIR_ENV})")]
    NoCacheDir,
    #[error("cannot run the sim build script with bash")]
    RunBuild(#[source] io::Error),
    #[error("the sim build failed ({status})")]
    BuildFailed {
        status: String,
        /// The build's last output lines.
        tail: String,
    },
    #[error("cannot create the directory `{}`", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write `{}`", path.display())]
    WriteFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read `{}`", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the sim record `{}` is not valid", path.display())]
    CorruptRecord {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot lock `{}` (another devenv is starting or stopping this cluster)", path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot generate the {what}")]
    Certificate {
        what: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("cannot choose a port on 127.0.0.1 for `{name}`")]
    Port {
        name: String,
        #[source]
        source: ports::Error,
    },
    #[error("cannot start the watchdog of the sim processes")]
    Watchdog(#[source] io::Error),
    #[error("cannot start `{component}` from `{}`", binary.display())]
    Spawn {
        component: &'static str,
        binary: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("`{component}` stopped while starting ({status})")]
    Exited { component: &'static str, status: String, log: Box<LogTail> },
    #[error(
        "`{component}` was not ready within {}s (waiting for {waiting_for}); last status: {last_status}",
        deadline.as_secs()
    )]
    NotReady {
        component: String,
        waiting_for: String,
        deadline: Duration,
        last_status: String,
        /// The log of the process in charge.
        log: Box<LogTail>,
    },
    #[error("cannot load the kubeconfig `{}`", path.display())]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("cannot create a Kubernetes client for context `{context}`")]
    Client {
        context: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot read the Flux CRD file `{}`", path.display())]
    ParseCrd {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("cannot apply {kind} `{name}`")]
    Apply {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot stop `{component}` (pid {pid})")]
    Stop {
        component: String,
        pid: i32,
        #[source]
        source: io::Error,
    },
    #[error("cannot remove `{}`", path.display())]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A process's log file and its last lines, carried by errors about that process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogTail {
    pub path: PathBuf,
    pub lines: String,
}

impl Error {
    /// The log of the process an error is about (the CLI shows its tail in the hint).
    pub fn log(&self) -> Option<&LogTail> {
        match self {
            Error::Exited { log, .. } | Error::NotReady { log, .. } => Some(log),
            _ => None,
        }
    }
}

/// The first 12 hex digits of the sha256 of [`VERSIONS`]: the cache directory's name.
pub fn versions_key() -> String {
    let digest = Sha256::digest(VERSIONS.as_bytes());
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// `${DEVENV_CACHE_DIR:-<user cache dir>/devenv}/sim/<key>`, where a build of these pins goes.
pub fn cache_dir() -> Result<PathBuf, Error> {
    let root = match std::env::var_os(CACHE_DIR_ENV).filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => dirs::cache_dir().ok_or(Error::NoCacheDir)?.join("devenv"),
    };
    Ok(root.join("sim").join(versions_key()))
}

/// A complete build of the pinned versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binaries {
    pub dir: PathBuf,
    pub key: String,
}

impl Binaries {
    pub fn bin(&self, name: &str) -> PathBuf {
        self.dir.join("bin").join(name)
    }

    /// The Flux CRDs, one YAML file each.
    pub fn crds(&self) -> PathBuf {
        self.dir.join("crds")
    }
}

/// The build of the pinned versions, or [`Error::NotBuilt`] naming where it should be.
pub fn binaries() -> Result<Binaries, Error> {
    let dir = cache_dir()?;
    let binaries = Binaries { dir: dir.clone(), key: versions_key() };
    let complete = BINARIES.iter().all(|b| is_executable(&binaries.bin(b)))
        && dir.join("build-info.json").is_file()
        && fs::read_dir(binaries.crds())
            .map(|entries| entries.filter_map(Result::ok).any(|e| e.path().extension().is_some_and(|x| x == "yaml")))
            .unwrap_or(false);
    if complete { Ok(binaries) } else { Err(Error::NotBuilt { dir }) }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Builds the binaries with the embedded script (cached: instant when already built),
/// reporting its progress lines; returns the build's directory.
pub async fn build(reporter: &dyn Reporter) -> Result<PathBuf, Error> {
    const STEP: &str = "sim/build";
    let started = Instant::now();
    reporter.started(STEP, "sim binaries (etcd, Kubernetes, kwok, Flux, registry)");
    let temp = tempfile::tempdir().map_err(Error::RunBuild)?;
    let script = temp.path().join("build.sh");
    let versions = temp.path().join("versions.env");
    for (path, text) in [(&script, BUILD_SCRIPT), (&versions, VERSIONS)] {
        fs::write(path, text).map_err(|source| Error::WriteFile { path: path.clone(), source })?;
    }
    let mut child = tokio::process::Command::new("bash")
        .arg(&script)
        .env("DEVENV_SIM_VERSIONS", &versions)
        .env_remove("DEVENV_SIM_VERSIONS_TEXT")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(Error::RunBuild)?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(Error::RunBuild(io::Error::other("no output pipes")));
    };
    let mut out = BufReader::new(stdout).lines();
    let mut err = BufReader::new(stderr).lines();
    let mut tail: Vec<String> = Vec::new();
    let (mut out_open, mut err_open) = (true, true);
    while out_open || err_open {
        let line = tokio::select! {
            line = out.next_line(), if out_open => line.unwrap_or(None).or_else(|| { out_open = false; None }),
            line = err.next_line(), if err_open => line.unwrap_or(None).or_else(|| { err_open = false; None }),
        };
        if let Some(line) = line {
            let shown = line.strip_prefix("[sim build] ").unwrap_or(&line);
            reporter.progress(STEP, shown);
            tail.push(line);
            if tail.len() > 40 {
                tail.remove(0);
            }
        }
    }
    let status = child.wait().await.map_err(Error::RunBuild)?;
    if !status.success() {
        reporter.finished(STEP, Status::Failed, "build failed", started.elapsed());
        return Err(Error::BuildFailed { status: status.to_string(), tail: tail.join("\n") });
    }
    let built = binaries()?;
    reporter.finished(STEP, Status::Ok, &format!("in {}", built.dir.display()), started.elapsed());
    Ok(built.dir)
}

/// Who the processes of a cluster belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lifetime {
    /// They outlive the process that ran `up` (the CLI); `down` stops them. An `up` that
    /// fails or is killed before the cluster is ready leaves nothing running.
    #[default]
    Detached,
    /// They are stopped when this process exits, however it exits (test harnesses).
    Owned,
}

/// Which processes make the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// The whole platform: control plane, kwok and its node, Flux and the registry.
    #[default]
    Full,
    /// etcd and kube-apiserver only (the peer the boot benchmark compares against).
    Apiserver,
}

impl Scope {
    fn components(self) -> &'static [Component] {
        match self {
            Scope::Full => &Component::ALL,
            Scope::Apiserver => &Component::ALL[..2],
        }
    }
}

/// How to reach a running sim cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SimInfo {
    /// Admin kubeconfig; `KUBECONFIG=<this> kubectl get nodes` works.
    pub kubeconfig: PathBuf,
    /// `devenv-<env>`.
    pub context: String,
    /// `https://127.0.0.1:PORT`.
    pub api_server: String,
    /// `127.0.0.1:PORT`, plain HTTP (Flux sources need `insecure: true`).
    pub registry: String,
}

/// One process of the cluster as `status` sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessStatus {
    pub name: String,
    pub pid: Option<u32>,
    pub port: Option<u16>,
    pub healthy: bool,
    /// `ready`, `not running`, or what the health check saw.
    pub detail: String,
    pub log: PathBuf,
    pub rss_bytes: Option<u64>,
}

/// What `up` wrote before starting anything.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    version: u32,
    env: String,
    context: String,
    binaries: PathBuf,
    scope: Scope,
    ports: Ports,
}

/// The files of `<env state dir>/sim/`.
#[derive(Debug, Clone)]
struct Layout {
    root: PathBuf,
}

impl Layout {
    fn record(&self) -> PathBuf {
        self.root.join("cluster.json")
    }
    fn kubeconfig(&self) -> PathBuf {
        self.root.join("kubeconfig")
    }
    fn kubeconfigs(&self) -> PathBuf {
        self.root.join("kubeconfigs")
    }
    fn pki(&self) -> PathBuf {
        self.root.join("pki")
    }
    fn config(&self) -> PathBuf {
        self.root.join("config")
    }
    fn run(&self) -> PathBuf {
        self.root.join("run")
    }
    fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
    fn data(&self) -> PathBuf {
        self.root.join("data")
    }
    fn home(&self) -> PathBuf {
        self.root.join("home")
    }
    fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }
    fn lock(&self) -> PathBuf {
        self.root.join("lock")
    }
    fn log(&self, component: Component) -> PathBuf {
        self.logs().join(format!("{}.log", component.name()))
    }
    fn pid_file(&self, component: Component) -> PathBuf {
        self.run().join(format!("{}.pid", component.name()))
    }
    fn watchdog_pid_file(&self) -> PathBuf {
        self.run().join("watchdog.pid")
    }

    fn load_record(&self) -> Result<Option<Record>, Error> {
        let path = self.record();
        match fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map(Some).map_err(|source| Error::CorruptRecord { path, source })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::ReadFile { path, source }),
        }
    }

    fn save_record(&self, record: &Record) -> Result<(), Error> {
        let path = self.record();
        let temp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(record).expect("the record serialises");
        fs::write(&temp, bytes)
            .and_then(|()| fs::rename(&temp, &path))
            .map_err(|source| Error::WriteFile { path, source })
    }

    fn create_dirs(&self) -> Result<(), Error> {
        for dir in [
            self.root.clone(),
            self.kubeconfigs(),
            self.config(),
            self.run(),
            self.logs(),
            self.data(),
            self.home(),
            self.tmp(),
        ] {
            fs::create_dir_all(&dir).map_err(|source| Error::CreateDir { path: dir, source })?;
        }
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&self.root, fs::Permissions::from_mode(0o700))
            .map_err(|source| Error::CreateDir { path: self.root.clone(), source })
    }

    fn info(&self, record: &Record) -> SimInfo {
        SimInfo {
            kubeconfig: self.kubeconfig(),
            context: record.context.clone(),
            api_server: format!("https://{}", record.ports.addr("kube-apiserver")),
            registry: record.ports.addr("registry"),
        }
    }
}

/// Watchdogs of clusters owned by this process ([`Lifetime::Owned`]), by sim directory.
/// Holding one keeps its pipe open; the kernel closes it when this process ends.
static OWNED: Mutex<Vec<(PathBuf, Watchdog)>> = Mutex::new(Vec::new());

fn take_owned(dir: &Path) -> Option<Watchdog> {
    let mut owned = OWNED.lock().unwrap_or_else(|p| p.into_inner());
    let index = owned.iter().position(|(d, _)| d == dir)?;
    Some(owned.swap_remove(index).1)
}

/// An exclusive lock on the sim directory while `up` or `down` changes it.
struct DirLock {
    _file: fs::File,
}

impl DirLock {
    async fn acquire(path: &Path) -> Result<DirLock, Error> {
        let lock_error = |source| Error::Lock { path: path.to_path_buf(), source };
        let file = fs::OpenOptions::new().create(true).truncate(false).write(true).open(path).map_err(lock_error)?;
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            // SAFETY: flock(2) on a descriptor we own.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(DirLock { _file: file });
            }
            let error = io::Error::last_os_error();
            if error.raw_os_error() != Some(libc::EWOULDBLOCK) || Instant::now() > deadline {
                return Err(lock_error(error));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The sim cluster of one environment.
#[derive(Debug, Clone)]
pub struct Sim {
    layout: Layout,
    lifetime: Lifetime,
    scope: Scope,
}

impl Sim {
    /// The cluster kept in `<state_dir>/sim` (the environment's state directory,
    /// `state::Store::for_env(env)?.dir()`), detached and complete by default.
    pub fn new(state_dir: &Path) -> Self {
        Sim { layout: Layout { root: state_dir.join("sim") }, lifetime: Lifetime::Detached, scope: Scope::Full }
    }

    pub fn with_lifetime(mut self, lifetime: Lifetime) -> Self {
        self.lifetime = lifetime;
        self
    }

    pub fn with_scope(mut self, scope: Scope) -> Self {
        self.scope = scope;
        self
    }

    /// The log file of the component named `name` (`kustomize-controller`, …), if there is one.
    pub fn log_of(&self, name: &str) -> Option<PathBuf> {
        Component::ALL.into_iter().find(|c| c.name() == name).map(|c| self.layout.log(c))
    }

    /// `<state_dir>/sim`.
    pub fn dir(&self) -> &Path {
        &self.layout.root
    }

    /// How to reach the cluster, if one was ever booted here (it may not be running).
    pub fn info(&self) -> Result<Option<SimInfo>, Error> {
        Ok(self.layout.load_record()?.map(|record| self.layout.info(&record)))
    }

    /// Makes sure the cluster runs and is healthy. A healthy cluster is reused as it is;
    /// anything less is stopped and booted again (the data survives).
    pub async fn up(&self, env: &str, reporter: &dyn Reporter) -> Result<SimInfo, Error> {
        Ok(self.carry_out(env, None, reporter).await?.0)
    }

    /// [`up`](Self::up) as planned: the decision is made again under the directory's lock,
    /// and a change since `planned` is reported. Returns the decision carried out.
    pub async fn carry_out(
        &self,
        env: &str,
        planned: Option<&ClusterIntent>,
        reporter: &dyn Reporter,
    ) -> Result<(SimInfo, ClusterIntent), Error> {
        const STEP: &str = "sim/cluster";
        let started = Instant::now();
        let binaries = binaries()?;
        let context = crate::naming::env_scoped(env);
        self.layout.create_dirs()?;
        let _lock = DirLock::acquire(&self.layout.lock()).await?;

        let previous = self.layout.load_record().ok().flatten();
        let mut intent = self.decide(previous.as_ref(), &binaries, &context).await;
        if let Some(planned) = planned {
            intent = crate::providers::replan(planned, intent, reporter);
        }
        match (intent.action, &previous) {
            (ClusterAction::Reuse, Some(record)) => {
                reporter.finished(STEP, Status::Unchanged, &format!("`{context}` already running"), started.elapsed());
                return Ok((self.layout.info(record), intent));
            }
            (ClusterAction::Restart, _) => reporter.progress(STEP, &format!("restarting: {}", intent.reason)),
            _ => {}
        }
        if self.stop_all().await? {
            reporter.progress(STEP, "stopped the processes of the previous boot");
        }

        reporter.started(STEP, &format!("`{context}` (Kubernetes, kwok, Flux, registry)"));
        let remembered = previous.map(|r| r.ports).unwrap_or_default();
        let (ports, held) = choose_ports(self.scope, &remembered)?;
        let record = Record {
            version: RECORD_VERSION,
            env: env.to_string(),
            context: context.clone(),
            binaries: binaries.dir.clone(),
            scope: self.scope,
            ports,
        };
        // Recorded before anything starts, so `down` finds whatever does.
        self.layout.save_record(&record)?;

        let mut watchdog = Watchdog::spawn(&self.layout.logs().join("watchdog.log")).map_err(Error::Watchdog)?;
        watchdog
            .pid
            .write(&self.layout.watchdog_pid_file())
            .map_err(|source| Error::WriteFile { path: self.layout.watchdog_pid_file(), source })?;
        let result = match boot::Boot::prepare(&self.layout, &binaries, &record, held, &mut watchdog) {
            Ok(boot) => boot.run(reporter).await,
            Err(error) => Err(error),
        };
        match result {
            Ok(()) => {
                match self.lifetime {
                    Lifetime::Detached => {
                        watchdog.release();
                        let _ = fs::remove_file(self.layout.watchdog_pid_file());
                    }
                    Lifetime::Owned => {
                        OWNED.lock().unwrap_or_else(|p| p.into_inner()).push((self.layout.root.clone(), watchdog))
                    }
                }
                reporter.finished(STEP, Status::Ok, &format!("`{context}` ready"), started.elapsed());
                Ok((self.layout.info(&record), intent))
            }
            Err(error) => {
                // Nothing of a failed boot keeps running; the logs stay for a look. Dropping
                // the watchdog (not releasing it) also stops anything the pid files missed.
                let _ = self.stop_processes().await;
                drop(watchdog);
                let _ = fs::remove_file(self.layout.watchdog_pid_file());
                reporter.finished(STEP, Status::Failed, "boot failed", started.elapsed());
                Err(error)
            }
        }
    }

    /// What [`up`](Self::up) would do now, and why, changing nothing.
    pub async fn intent(&self, env: &str) -> Result<ClusterIntent, Error> {
        let binaries = binaries()?;
        let record = self.layout.load_record().ok().flatten();
        Ok(self.decide(record.as_ref(), &binaries, &crate::naming::env_scoped(env)).await)
    }

    /// A healthy cluster booted here by these binaries for this environment is reused;
    /// anything else is booted (again, keeping the data).
    async fn decide(&self, record: Option<&Record>, binaries: &Binaries, context: &str) -> ClusterIntent {
        let Some(record) = record else {
            return ClusterIntent::new(ClusterAction::Create, "no sim cluster was booted for this environment");
        };
        if record.version != RECORD_VERSION || record.binaries != binaries.dir || record.scope != self.scope {
            return ClusterIntent::new(ClusterAction::Restart, "it was booted by another devenv or other binaries");
        }
        if record.context != context {
            return ClusterIntent::new(ClusterAction::Restart, format!("it was booted as `{}`", record.context));
        }
        match self.check(record).await {
            Ok(()) => ClusterIntent::new(ClusterAction::Reuse, format!("`{context}` is running and healthy")),
            Err(why) => ClusterIntent::new(ClusterAction::Restart, why),
        }
    }

    /// Every process of the cluster with its pid, port and health; empty when no cluster
    /// was ever booted here.
    pub async fn status(&self) -> Result<Vec<ProcessStatus>, Error> {
        let Some(record) = self.layout.load_record()? else {
            return Ok(Vec::new());
        };
        let prober = self.prober(&record).await;
        let checks = record.scope.components().iter().map(|&component| {
            let prober = &prober;
            let record = &record;
            async move {
                let pid = Pid::read(&self.layout.pid_file(component)).filter(Pid::alive);
                let probe = component.probe(&record.ports);
                let (healthy, detail) = match (&pid, prober) {
                    (None, _) => (false, "not running".to_string()),
                    (Some(_), Err(why)) => (false, why.clone()),
                    (Some(_), Ok(prober)) => match prober.check(&probe).await {
                        Ok(()) => (true, "ready".to_string()),
                        Err(why) => (false, why),
                    },
                };
                ProcessStatus {
                    name: component.name().to_string(),
                    pid: pid.and_then(|p| u32::try_from(p.pid).ok()),
                    port: Some(record.ports.port(component.main_port())).filter(|p| *p != 0),
                    healthy,
                    detail,
                    log: self.layout.log(component),
                    rss_bytes: pid.and_then(|p| p.rss_bytes()),
                }
            }
        });
        Ok(futures_util::future::join_all(checks).await)
    }

    /// Stops every process (SIGTERM, then SIGKILL after [`STOP_GRACE`]); with `purge`,
    /// removes the whole sim directory (data, certificates, logs). Returns whether anything
    /// was running.
    pub async fn down(&self, purge: bool, reporter: &dyn Reporter) -> Result<bool, Error> {
        const STEP: &str = "sim/cluster";
        let started = Instant::now();
        if !self.layout.root.exists() {
            return Ok(false);
        }
        let lock = DirLock::acquire(&self.layout.lock()).await?;
        reporter.started(STEP, "stopping the sim processes");
        let was_running = self.stop_all().await?;
        let mut message = if was_running { "stopped".to_string() } else { "was not running".to_string() };
        if purge {
            drop(lock);
            match fs::remove_dir_all(&self.layout.root) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(Error::Remove { path: self.layout.root.clone(), source: e });
                }
                _ => message.push_str(", data removed"),
            }
        }
        reporter.finished(STEP, Status::Ok, &message, started.elapsed());
        Ok(was_running)
    }

    /// All processes alive and every health check passing, or why not.
    async fn check(&self, record: &Record) -> Result<(), String> {
        let prober = self.prober(record).await?;
        let components = record.scope.components();
        for &component in components {
            match Pid::read(&self.layout.pid_file(component)) {
                Some(pid) if pid.alive() => {}
                _ => return Err(format!("`{}` is not running", component.name())),
            }
        }
        let checks =
            components.iter().map(|&component| {
                let probe = component.probe(&record.ports);
                let prober = &prober;
                async move {
                    prober.check(&probe).await.map_err(|why| format!("`{}` is not healthy: {why}", component.name()))
                }
            });
        futures_util::future::try_join_all(checks).await.map(drop)
    }

    async fn prober(&self, record: &Record) -> Result<probe::Prober, String> {
        boot::admin_config(&self.layout.kubeconfig(), &record.context)
            .await
            .map(probe::Prober::new)
            .map_err(|e| e.to_string())
    }

    /// Stops the processes and the watchdog; whether any process was running.
    async fn stop_all(&self) -> Result<bool, Error> {
        let owned = take_owned(&self.layout.root);
        if owned.is_none()
            && let Some(pid) = Pid::read(&self.layout.watchdog_pid_file())
            && process::is_watchdog(&pid)
        {
            // A watchdog whose owner is elsewhere has nothing left to guard.
            let _ = pid.signal(libc::SIGKILL);
        }
        let was_running = self.stop_processes().await;
        if let Some(watchdog) = owned {
            watchdog.release();
        }
        let _ = fs::remove_file(self.layout.watchdog_pid_file());
        was_running
    }

    /// SIGTERM to every live process of ours, SIGKILL to those left after the grace period;
    /// etcd last, so kube-apiserver can shut down cleanly.
    async fn stop_processes(&self) -> Result<bool, Error> {
        let live = |components: &mut dyn Iterator<Item = Component>| -> Vec<(Component, Pid)> {
            components
                .filter_map(|c| Pid::read(&self.layout.pid_file(c)).map(|p| (c, p)))
                .filter(|(_, p)| p.alive())
                .collect()
        };
        let first = live(&mut Component::ALL.iter().copied().filter(|c| *c != Component::Etcd));
        let last = live(&mut std::iter::once(Component::Etcd));
        let was_running = !first.is_empty() || !last.is_empty();
        for wave in [first, last] {
            stop_wave(wave).await?;
        }
        for &component in &Component::ALL {
            let _ = fs::remove_file(self.layout.pid_file(component));
        }
        Ok(was_running)
    }
}

async fn stop_wave(mut live: Vec<(Component, Pid)>) -> Result<(), Error> {
    for (signal, grace) in [(libc::SIGTERM, STOP_GRACE), (libc::SIGKILL, Duration::from_secs(5))] {
        for (component, pid) in &live {
            pid.signal(signal).map_err(|source| Error::Stop {
                component: component.name().to_string(),
                pid: pid.pid,
                source,
            })?;
        }
        let deadline = Instant::now() + grace;
        while !live.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            live.retain(|(_, pid)| pid.alive());
        }
        if live.is_empty() {
            break;
        }
    }
    Ok(())
}

/// Ports for every process of the scope: the remembered one while it is free, else a new one.
/// Each is held by a listener until its process starts (see [`boot::Boot::start`]).
fn choose_ports(scope: Scope, remembered: &Ports) -> Result<(Ports, HeldPorts), Error> {
    let mut chosen: Ports = BTreeMap::new();
    let mut held = HeldPorts::new();
    for component in scope.components() {
        for &name in component.ports() {
            let taken: Vec<u16> = chosen.values().copied().collect();
            let kept = remembered
                .get(name)
                .copied()
                .filter(|p| *p != 0 && !taken.contains(p))
                .and_then(|port| Some((port, ports::hold(port)?)));
            let (port, listener) = match kept {
                Some(kept) => kept,
                None => ports::pick_held(&taken).map_err(|source| Error::Port { name: name.to_string(), source })?,
            };
            chosen.insert(name.to_string(), port);
            held.insert(name.to_string(), listener);
        }
    }
    Ok((chosen, held))
}

/// A client for the cluster, from its admin kubeconfig.
pub async fn client(info: &SimInfo) -> Result<kube::Client, Error> {
    let config = boot::admin_config(&info.kubeconfig, &info.context).await?;
    kube::Client::try_from(config).map_err(|source| Error::Client { context: info.context.clone(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_the_hash_of_the_pins() {
        let key = versions_key();
        assert_eq!(key.len(), 12);
        assert!(key.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn ports_are_kept_while_free_and_distinct() {
        let (first, held) = choose_ports(Scope::Full, &Ports::new()).unwrap();
        assert!(first.values().all(|port| !ports::is_free(*port)), "chosen ports are held");
        drop(held);
        let names: usize = Component::ALL.iter().map(|c| c.ports().len()).sum();
        assert_eq!(first.len(), names);
        let mut distinct: Vec<u16> = first.values().copied().collect();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), names);
        let (again, _) = choose_ports(Scope::Full, &first).unwrap();
        assert_eq!(again, first);
        let held = std::net::TcpListener::bind(("127.0.0.1", first["etcd"])).unwrap();
        let (moved, _) = choose_ports(Scope::Full, &first).unwrap();
        assert_ne!(moved["etcd"], first["etcd"]);
        drop(held);
    }

    #[test]
    fn apiserver_scope_has_etcd_and_apiserver() {
        let (ports, _) = choose_ports(Scope::Apiserver, &Ports::new()).unwrap();
        assert_eq!(ports.keys().map(String::as_str).collect::<Vec<_>>(), ["etcd", "etcd-peer", "kube-apiserver"]);
    }

    #[tokio::test]
    async fn missing_binaries_name_their_directory() {
        // A cache root with nothing in it.
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("sim").join(versions_key());
        fs::create_dir_all(dir.join("bin")).unwrap();
        let binaries = Binaries { dir: dir.clone(), key: versions_key() };
        assert!(!is_executable(&binaries.bin("etcd")));
        let error = Error::NotBuilt { dir: dir.clone() };
        assert!(error.to_string().contains(&dir.display().to_string()));
    }
}
