//! The Docker engine, through bollard: one error variant per operation, 404 means "absent".

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::models::{ContainerCreateBody, HostConfig, NetworkConnectRequest, PortBinding, VolumeCreateRequest};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder, ListVolumesOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder, StatsOptionsBuilder,
    StopContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use futures_util::StreamExt;

use crate::ports::LOOPBACK;

/// How long to wait for the engine to answer the first request.
const CONNECT_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach the Docker engine at `{endpoint}`")]
    Unreachable {
        endpoint: String,
        #[source]
        source: BollardError,
    },
    #[error("the Docker engine at `{endpoint}` did not answer within {}s", CONNECT_DEADLINE.as_secs())]
    NoAnswer { endpoint: String },
    #[error("cannot pull image `{image}`")]
    Pull {
        image: String,
        #[source]
        source: BollardError,
    },
    #[error("cannot inspect image `{image}`")]
    InspectImage {
        image: String,
        #[source]
        source: BollardError,
    },
    #[error("cannot create container `{name}`")]
    CreateContainer {
        name: String,
        #[source]
        source: BollardError,
    },
    #[error("cannot start container `{name}`")]
    StartContainer {
        name: String,
        #[source]
        source: BollardError,
    },
    #[error("cannot stop container `{name}`")]
    StopContainer {
        name: String,
        #[source]
        source: BollardError,
    },
    #[error("cannot remove container `{name}`")]
    RemoveContainer {
        name: String,
        #[source]
        source: BollardError,
    },
    #[error("cannot inspect container `{name}`")]
    InspectContainer {
        name: String,
        #[source]
        source: BollardError,
    },
    #[error("cannot list containers")]
    ListContainers(#[source] BollardError),
    #[error("cannot create volume `{name}`")]
    CreateVolume {
        name: String,
        #[source]
        source: BollardError,
    },
    #[error("cannot remove volume `{name}`")]
    RemoveVolume {
        name: String,
        #[source]
        source: BollardError,
    },
    #[error("cannot list volumes")]
    ListVolumes(#[source] BollardError),
    #[error("cannot inspect the Docker network `{name}`")]
    InspectNetwork {
        name: String,
        #[source]
        source: BollardError,
    },
    #[error("cannot connect container `{container}` to the Docker network `{network}`")]
    ConnectNetwork {
        container: String,
        network: String,
        #[source]
        source: BollardError,
    },
    #[error("cannot copy files into container `{name}`")]
    Upload {
        name: String,
        #[source]
        source: BollardError,
    },
    #[error("cannot read the logs of container `{name}`")]
    Logs {
        name: String,
        #[source]
        source: BollardError,
    },
    #[error("cannot read the resource usage of container `{name}`")]
    Stats {
        name: String,
        #[source]
        source: BollardError,
    },
}

/// What a container should be; its hash decides whether an existing one still fits.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub env: BTreeMap<String, String>,
    pub command: Option<Vec<String>>,
    pub labels: BTreeMap<String, String>,
    /// Container port → host port on 127.0.0.1.
    pub ports: BTreeMap<u16, u16>,
    /// Named volume and the path it is mounted at.
    pub volume: Option<(String, String)>,
    pub memory_bytes: Option<i64>,
    /// The Docker network the container joins instead of the default bridge, where other
    /// containers (a kind cluster's nodes) reach it by its name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

/// A running container's memory use, as `docker stats` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryUsage {
    /// Bytes in use, without the page cache the kernel can reclaim (inactive files).
    pub used_bytes: u64,
    /// The container's memory limit (the machine's memory when it has none).
    pub limit_bytes: Option<u64>,
}

/// What a container is.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    pub image: String,
    pub running: bool,
    /// Docker's state word: running, exited, created …
    pub state: String,
    pub exit_code: Option<i64>,
    pub labels: BTreeMap<String, String>,
    /// Container port → host port.
    pub ports: BTreeMap<u16, u16>,
}

/// Which of a container's streams a piece of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// A piece of a container's output (often one line, but not always).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    pub stream: LogStream,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct Docker {
    client: bollard::Docker,
    endpoint: String,
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EngineVersion {
    pub version: String,
    pub api_version: String,
}

/// Requests that change the engine (create, start, remove…) on their way now.
static CHANGING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Counts a changing request while it is on its way.
struct Changing;

impl Changing {
    fn begin() -> Self {
        CHANGING.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Changing
    }
}

impl Drop for Changing {
    fn drop(&mut self) {
        CHANGING.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// How many requests that change the engine are on their way. The engine carries out a
/// request it has received even when its client goes away, so an interrupted command lets
/// these finish before it exits: what they make is then there for `down` to find.
pub fn changes_in_flight() -> usize {
    CHANGING.load(std::sync::atomic::Ordering::SeqCst)
}

impl Error {
    /// Whether the engine stopped answering in the middle of an operation (its socket gone,
    /// the connection refused or cut), as when it is restarted, rather than refusing it.
    pub fn engine_gone(&self) -> bool {
        use std::io::ErrorKind::*;
        let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(self);
        while let Some(current) = cause {
            if let Some(io) = current.downcast_ref::<std::io::Error>()
                && matches!(
                    io.kind(),
                    NotFound | ConnectionRefused | ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
                )
            {
                return true;
            }
            // hyper's words for a connection that closed before its answer came.
            if current.to_string().contains("connection closed before message completed") {
                return true;
            }
            cause = current.source();
        }
        false
    }
}

impl Docker {
    /// Connects to the engine named by `DOCKER_HOST` or the default socket, agreeing on an
    /// API version both sides speak.
    pub async fn connect() -> Result<Self, Error> {
        let endpoint = std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".to_string());
        let unreachable = |source| Error::Unreachable { endpoint: endpoint.clone(), source };
        let client = bollard::Docker::connect_with_defaults().map_err(unreachable)?;
        let client = tokio::time::timeout(CONNECT_DEADLINE, client.negotiate_version())
            .await
            .map_err(|_| Error::NoAnswer { endpoint: endpoint.clone() })?
            .map_err(unreachable)?;
        Ok(Docker { client, endpoint })
    }

    pub async fn version(&self) -> Result<EngineVersion, Error> {
        let version = self
            .client
            .version()
            .await
            .map_err(|source| Error::Unreachable { endpoint: self.endpoint.clone(), source })?;
        Ok(EngineVersion {
            version: version.version.unwrap_or_default(),
            api_version: version.api_version.unwrap_or_default(),
        })
    }

    /// The engine's data directory, for the disk-space check.
    pub async fn root_dir(&self) -> Option<String> {
        self.client.info().await.ok().and_then(|info| info.docker_root_dir)
    }

    /// Makes sure the image is present, pulling it if not; `progress` receives pull status lines.
    pub async fn ensure_image(&self, image: &str, progress: &(dyn Fn(&str) + Sync)) -> Result<bool, Error> {
        match self.client.inspect_image(image).await {
            Ok(_) => return Ok(false),
            Err(e) if is_not_found(&e) => {}
            Err(source) => {
                return Err(Error::InspectImage { image: image.to_string(), source });
            }
        }
        let options = CreateImageOptionsBuilder::default().from_image(image).build();
        let mut stream = self.client.create_image(Some(options), None, None);
        while let Some(item) = stream.next().await {
            let info = item.map_err(|source| Error::Pull { image: image.to_string(), source })?;
            if let Some(status) = info.status {
                progress(&status);
            }
        }
        Ok(true)
    }

    pub async fn inspect_container(&self, name: &str) -> Result<Option<ContainerInfo>, Error> {
        let response = match self.client.inspect_container(name, None).await {
            Ok(response) => response,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(source) => {
                return Err(Error::InspectContainer { name: name.to_string(), source });
            }
        };
        let state = response.state.unwrap_or_default();
        let config = response.config.unwrap_or_default();
        let ports = response
            .host_config
            .and_then(|h| h.port_bindings)
            .map(|bindings| parse_port_map(&bindings))
            .unwrap_or_default();
        Ok(Some(ContainerInfo {
            id: response.id.unwrap_or_default(),
            name: response.name.unwrap_or_default().trim_start_matches('/').to_string(),
            image: config.image.unwrap_or_default(),
            running: state.running.unwrap_or(false),
            state: state.status.map(|s| s.to_string()).unwrap_or_default(),
            exit_code: state.exit_code,
            labels: config.labels.unwrap_or_default().into_iter().collect(),
            ports,
        }))
    }

    /// Names of all containers (running or not) carrying every given label (an empty value:
    /// the label with any value).
    pub async fn containers_with_labels(&self, labels: &[(&str, &str)]) -> Result<Vec<String>, Error> {
        let filters = label_filters(labels);
        let options = ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
        let summaries = self.client.list_containers(Some(options)).await.map_err(Error::ListContainers)?;
        let mut names: Vec<String> = summaries
            .into_iter()
            .filter_map(|s| s.names.and_then(|n| n.into_iter().next()))
            .map(|n| n.trim_start_matches('/').to_string())
            .collect();
        names.sort();
        Ok(names)
    }

    pub async fn create_container(&self, spec: &ContainerSpec) -> Result<String, Error> {
        let _changing = Changing::begin();
        let bindings: HashMap<String, Option<Vec<PortBinding>>> = spec
            .ports
            .iter()
            .map(|(container, host)| {
                let binding = PortBinding { host_ip: Some(LOOPBACK.to_string()), host_port: Some(host.to_string()) };
                (format!("{container}/tcp"), Some(vec![binding]))
            })
            .collect();
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            cmd: spec.command.clone(),
            labels: Some(spec.labels.clone().into_iter().collect()),
            exposed_ports: Some(spec.ports.keys().map(|p| format!("{p}/tcp")).collect()),
            host_config: Some(HostConfig {
                port_bindings: Some(bindings),
                binds: spec.volume.as_ref().map(|(name, path)| vec![format!("{name}:{path}")]),
                memory: spec.memory_bytes,
                network_mode: spec.network.clone(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default().name(&spec.name).build();
        let response = self
            .client
            .create_container(Some(options), body)
            .await
            .map_err(|source| Error::CreateContainer { name: spec.name.clone(), source })?;
        Ok(response.id)
    }

    pub async fn start_container(&self, name: &str) -> Result<(), Error> {
        let _changing = Changing::begin();
        self.client
            .start_container(name, None)
            .await
            .map_err(|source| Error::StartContainer { name: name.to_string(), source })
    }

    /// Stops (SIGTERM, then SIGKILL after `grace`) and removes a container; absent is fine.
    pub async fn remove_container(&self, name: &str, grace: Duration) -> Result<(), Error> {
        let _changing = Changing::begin();
        let stop = StopContainerOptionsBuilder::default().t(grace.as_secs() as i32).build();
        match self.client.stop_container(name, Some(stop)).await {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => return Ok(()),
            // 304: already stopped.
            Err(e) if status_code(&e) == Some(304) => {}
            Err(source) => {
                return Err(Error::StopContainer { name: name.to_string(), source });
            }
        }
        let remove = RemoveContainerOptionsBuilder::default().force(true).build();
        match self.client.remove_container(name, Some(remove)).await {
            Err(e) if !is_not_found(&e) => Err(Error::RemoveContainer { name: name.to_string(), source: e }),
            _ => Ok(()),
        }
    }

    /// The memory a running container uses now (one sample, not a stream); `None` when the
    /// container does not exist or is not running.
    pub async fn memory_usage(&self, name: &str) -> Result<Option<MemoryUsage>, Error> {
        let options = StatsOptionsBuilder::default().stream(false).one_shot(true).build();
        let mut stream = self.client.stats(name, Some(options));
        let stats = match stream.next().await {
            None => return Ok(None),
            Some(Err(e)) if is_not_found(&e) => return Ok(None),
            Some(Err(source)) => return Err(Error::Stats { name: name.to_string(), source }),
            Some(Ok(stats)) => stats,
        };
        Ok(stats.memory_stats.and_then(|memory| {
            let usage = memory.usage?;
            // What `docker stats` subtracts: reclaimable page cache (cgroup v2, then v1 names).
            let cache = memory
                .stats
                .as_ref()
                .and_then(|s| s.get("inactive_file").or_else(|| s.get("total_inactive_file")).copied())
                .unwrap_or(0);
            Some(MemoryUsage { used_bytes: usage.saturating_sub(cache), limit_bytes: memory.limit })
        }))
    }

    /// The last lines a container printed, to explain why it stopped.
    pub async fn logs_tail(&self, name: &str, lines: usize) -> String {
        let options = LogsOptionsBuilder::default().stdout(true).stderr(true).tail(&lines.to_string()).build();
        let mut stream = self.client.logs(name, Some(options));
        let mut out = String::new();
        while let Some(Ok(chunk)) = stream.next().await {
            out.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        }
        out
    }

    /// A container's output as it comes, stdout and stderr apart: what it printed since `since`
    /// (all of it without), then, with `follow`, what it prints until it stops.
    pub fn logs(
        &self,
        name: &str,
        follow: bool,
        since: Option<std::time::SystemTime>,
    ) -> impl futures_util::Stream<Item = Result<LogChunk, Error>> + Send + use<> {
        let since = since
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| i32::try_from(d.as_secs()).unwrap_or(i32::MAX))
            .unwrap_or(0);
        let options = LogsOptionsBuilder::default().stdout(true).stderr(true).follow(follow).since(since).build();
        let name = name.to_string();
        self.client.logs(&name, Some(options)).filter_map(move |item| {
            let chunk = match item {
                Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                    Some(Ok(LogChunk { stream: LogStream::Stdout, bytes: message.to_vec() }))
                }
                Ok(LogOutput::StdErr { message }) => {
                    Some(Ok(LogChunk { stream: LogStream::Stderr, bytes: message.to_vec() }))
                }
                Ok(LogOutput::StdIn { .. }) => None,
                Err(source) => Some(Err(Error::Logs { name: name.clone(), source })),
            };
            std::future::ready(chunk)
        })
    }

    /// Creates a labelled volume; an existing one is kept as it is.
    pub async fn ensure_volume(&self, name: &str, labels: &BTreeMap<String, String>) -> Result<(), Error> {
        let _changing = Changing::begin();
        let request = VolumeCreateRequest {
            name: Some(name.to_string()),
            labels: Some(labels.clone().into_iter().collect()),
            ..Default::default()
        };
        self.client
            .create_volume(request)
            .await
            .map(|_| ())
            .map_err(|source| Error::CreateVolume { name: name.to_string(), source })
    }

    pub async fn volumes_with_labels(&self, labels: &[(&str, &str)]) -> Result<Vec<String>, Error> {
        let filters = label_filters(labels);
        let options = ListVolumesOptionsBuilder::default().filters(&filters).build();
        let response = self.client.list_volumes(Some(options)).await.map_err(Error::ListVolumes)?;
        let mut names: Vec<String> = response.volumes.unwrap_or_default().into_iter().map(|v| v.name).collect();
        names.sort();
        Ok(names)
    }

    pub async fn remove_volume(&self, name: &str) -> Result<(), Error> {
        let _changing = Changing::begin();
        let options = RemoveVolumeOptionsBuilder::default().force(true).build();
        match self.client.remove_volume(name, Some(options)).await {
            Err(e) if !is_not_found(&e) => Err(Error::RemoveVolume { name: name.to_string(), source: e }),
            _ => Ok(()),
        }
    }
}

impl Docker {
    /// The containers attached to a network (by name), or `None` when there is no such network.
    pub async fn network_members(&self, network: &str) -> Result<Option<Vec<String>>, Error> {
        match self.client.inspect_network(network, None).await {
            Ok(inspect) => {
                let mut names: Vec<String> =
                    inspect.containers.unwrap_or_default().into_values().filter_map(|c| c.name).collect();
                names.sort();
                Ok(Some(names))
            }
            Err(e) if is_not_found(&e) => Ok(None),
            Err(source) => Err(Error::InspectNetwork { name: network.to_string(), source }),
        }
    }

    /// Attaches a container to a network; one already attached is left as it is.
    pub async fn connect_network(&self, container: &str, network: &str) -> Result<(), Error> {
        let _changing = Changing::begin();
        if self.network_members(network).await?.is_some_and(|members| members.iter().any(|m| m == container)) {
            return Ok(());
        }
        let request = NetworkConnectRequest { container: container.to_string(), endpoint_config: None };
        self.client.connect_network(network, request).await.map_err(|source| Error::ConnectNetwork {
            container: container.to_string(),
            network: network.to_string(),
            source,
        })
    }

    /// Writes files (path relative to `/`, contents) into a container's file system, creating
    /// their directories.
    pub async fn write_files(&self, container: &str, files: &[(String, Vec<u8>)]) -> Result<(), Error> {
        let mut archive = tar::Builder::new(Vec::new());
        for (path, contents) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(contents.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(0);
            header.set_cksum();
            // Writing to a Vec cannot fail.
            let _ = archive.append_data(&mut header, path.trim_start_matches('/'), contents.as_slice());
        }
        let bytes = archive.into_inner().unwrap_or_default();
        let options = UploadToContainerOptionsBuilder::default().path("/").build();
        self.client
            .upload_to_container(container, Some(options), bollard::body_full(bytes.into()))
            .await
            .map_err(|source| Error::Upload { name: container.to_string(), source })
    }
}

/// `key=value` filters; an empty value asks only that the label is there.
fn label_filters(labels: &[(&str, &str)]) -> HashMap<String, Vec<String>> {
    let filter =
        |(key, value): &(&str, &str)| if value.is_empty() { key.to_string() } else { format!("{key}={value}") };
    HashMap::from([("label".to_string(), labels.iter().map(filter).collect())])
}

fn parse_port_map(bindings: &HashMap<String, Option<Vec<PortBinding>>>) -> BTreeMap<u16, u16> {
    bindings
        .iter()
        .filter_map(|(key, list)| {
            let container = key.split('/').next()?.parse().ok()?;
            let host = list.as_ref()?.first()?.host_port.as_ref()?.parse().ok()?;
            Some((container, host))
        })
        .collect()
}

fn status_code(error: &BollardError) -> Option<u16> {
    match error {
        BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn is_not_found(error: &BollardError) -> bool {
    status_code(error) == Some(404)
}
