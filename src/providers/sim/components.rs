//! The processes of a sim cluster: what each one is called, which ports it takes, how it is
//! started and how its health is checked.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;

use super::certs::{self, Pki};

/// The service range; its first address (10.0.0.1) is the `kubernetes` Service.
pub(super) const SERVICE_RANGE: &str = "10.0.0.0/24";
/// Addresses kwok hands out to simulated pods, and the simulated node's address.
const POD_RANGE: &str = "10.244.0.1/16";
const NODE_IP: &str = "10.1.0.1";
/// The annotation that puts a Node under kwok's management.
pub(crate) const KWOK_NODE_ANNOTATION: (&str, &str) = ("kwok.x-k8s.io/node", "fake");
/// The namespace the Flux controllers consider their own.
pub(super) const FLUX_NAMESPACE: &str = "flux-system";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Component {
    Etcd,
    Apiserver,
    ControllerManager,
    Scheduler,
    Kwok,
    SourceController,
    KustomizeController,
    HelmController,
    Registry,
}

use Component::*;

impl Component {
    /// In start order.
    pub const ALL: [Component; 9] = [
        Etcd,
        Apiserver,
        ControllerManager,
        Scheduler,
        Kwok,
        SourceController,
        KustomizeController,
        HelmController,
        Registry,
    ];

    /// The process's name, which is also its binary's name in the cache.
    pub fn name(self) -> &'static str {
        match self {
            Etcd => "etcd",
            Apiserver => "kube-apiserver",
            ControllerManager => "kube-controller-manager",
            Scheduler => "kube-scheduler",
            Kwok => "kwok",
            SourceController => "source-controller",
            KustomizeController => "kustomize-controller",
            HelmController => "helm-controller",
            Registry => "registry",
        }
    }

    /// The ports it listens on, by name; the first is the one `status` shows.
    pub fn ports(self) -> &'static [&'static str] {
        match self {
            Etcd => &["etcd", "etcd-peer"],
            Apiserver => &["kube-apiserver"],
            ControllerManager => &["kube-controller-manager"],
            Scheduler => &["kube-scheduler"],
            Kwok => &["kwok", "kwok-node"],
            SourceController => &["source-controller-storage", "source-controller-health", "source-controller-metrics"],
            KustomizeController => &["kustomize-controller-health", "kustomize-controller-metrics"],
            HelmController => &["helm-controller-health", "helm-controller-metrics"],
            Registry => &["registry"],
        }
    }

    pub fn main_port(self) -> &'static str {
        self.ports()[0]
    }

    /// How its health is checked, and what that check is called in messages.
    pub fn probe(self, ports: &Ports) -> Probe {
        let (port, path, tls) = match self {
            Etcd => ("etcd", "/health", true),
            Apiserver => ("kube-apiserver", "/readyz", true),
            ControllerManager => ("kube-controller-manager", "/healthz", true),
            Scheduler => ("kube-scheduler", "/healthz", true),
            Kwok => ("kwok", "/healthz", false),
            SourceController => ("source-controller-health", "/readyz", false),
            KustomizeController => ("kustomize-controller-health", "/readyz", false),
            HelmController => ("helm-controller-health", "/readyz", false),
            Registry => ("registry", "/v2/", false),
        };
        Probe { port: ports.port(port), path, tls }
    }

    /// The Flux controllers read the kubeconfig from the environment.
    fn is_flux(self) -> bool {
        matches!(self, SourceController | KustomizeController | HelmController)
    }
}

/// An HTTP GET on 127.0.0.1; with `tls`, HTTPS verified against the cluster CA and
/// authenticated with the admin client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Probe {
    pub port: u16,
    pub path: &'static str,
    pub tls: bool,
}

impl Probe {
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}{}", self.port, self.path)
    }
}

/// Port name → port on 127.0.0.1.
pub(super) type Ports = BTreeMap<String, u16>;

/// Port name → a listener of our own that keeps the port from other devenvs until the
/// process that should listen on it starts.
pub(super) type HeldPorts = BTreeMap<String, std::net::TcpListener>;

pub(super) trait PortsExt {
    /// The port, or 0 (which no check reaches) when a record predates the name.
    fn port(&self, name: &str) -> u16;
    fn addr(&self, name: &str) -> String {
        format!("127.0.0.1:{}", self.port(name))
    }
}

impl PortsExt for Ports {
    fn port(&self, name: &str) -> u16 {
        self.get(name).copied().unwrap_or(0)
    }
}

/// Everything a command line refers to.
pub(super) struct Setting {
    pub env: String,
    pub ports: Ports,
    pub pki: Pki,
    /// Admin kubeconfig (kwok, the Flux controllers).
    pub kubeconfig: PathBuf,
    pub controller_manager_kubeconfig: PathBuf,
    pub scheduler_kubeconfig: PathBuf,
    pub kwok_config: PathBuf,
    pub registry_config: PathBuf,
    pub data: PathBuf,
    pub home: PathBuf,
    pub tmp: PathBuf,
}

fn flag(name: &str, value: impl AsRef<std::ffi::OsStr>) -> OsString {
    let mut s = OsString::from(format!("--{name}="));
    s.push(value.as_ref());
    s
}

/// Flags kube-controller-manager and kube-scheduler share: one kubeconfig for talking to and
/// authenticating against the API server, a secure port on 127.0.0.1 with the serving
/// certificate, no leader election (there is one of each), and a higher API rate limit.
fn kube_loop_flags(p: &Ports, pki: &Pki, name: &str, kubeconfig: &std::path::Path) -> Vec<OsString> {
    vec![
        flag("kubeconfig", kubeconfig),
        flag("authentication-kubeconfig", kubeconfig),
        flag("authorization-kubeconfig", kubeconfig),
        flag("bind-address", "127.0.0.1"),
        flag("secure-port", p.port(name).to_string()),
        flag("tls-cert-file", pki.serving_cert()),
        flag("tls-private-key-file", pki.serving_key()),
        flag("leader-elect", "false"),
        flag("kube-api-qps", "100"),
        flag("kube-api-burst", "200"),
        flag("profiling", "false"),
    ]
}

/// Flags every Flux controller takes: its own metrics and health ports on 127.0.0.1 (the
/// defaults bind every interface), no event recorder, all namespaces.
fn flux_controller_flags(p: &Ports, name: &str) -> Vec<OsString> {
    vec![
        flag("metrics-addr", p.addr(&format!("{name}-metrics"))),
        flag("health-addr", p.addr(&format!("{name}-health"))),
        flag("events-addr", ""),
        flag("watch-all-namespaces", "true"),
        // Each `dependsOn` level waits this long for its dependency to catch up with a new
        // revision; on a local cluster a short wait is what keeps edits fast.
        flag("requeue-dependency", "1s"),
        flag("log-encoding", "console"),
    ]
}

impl Setting {
    pub fn etcd_data(&self) -> PathBuf {
        self.data.join("etcd")
    }
    pub fn registry_data(&self) -> PathBuf {
        self.data.join("registry")
    }
    pub fn source_storage(&self) -> PathBuf {
        self.data.join("source-controller")
    }

    /// Arguments and extra environment of a component.
    pub fn command(&self, component: Component) -> (Vec<OsString>, Vec<(&'static str, OsString)>) {
        let p = &self.ports;
        let pki = &self.pki;
        let https = |name: &str| format!("https://{}", p.addr(name));
        let args: Vec<OsString> = match component {
            // TLS with client certificates of the cluster's CA on both ports: without them
            // any local user could read the environment's Secrets from etcd.
            Etcd => vec![
                flag("name", "devenv"),
                flag("data-dir", self.etcd_data()),
                flag("listen-client-urls", https("etcd")),
                flag("advertise-client-urls", https("etcd")),
                flag("cert-file", pki.etcd_cert()),
                flag("key-file", pki.etcd_key()),
                flag("client-cert-auth", "true"),
                flag("trusted-ca-file", pki.ca_cert()),
                flag("listen-peer-urls", https("etcd-peer")),
                flag("initial-advertise-peer-urls", https("etcd-peer")),
                flag("initial-cluster", format!("devenv={}", https("etcd-peer"))),
                flag("peer-cert-file", pki.etcd_cert()),
                flag("peer-key-file", pki.etcd_key()),
                flag("peer-client-cert-auth", "true"),
                flag("peer-trusted-ca-file", pki.ca_cert()),
                flag("unsafe-no-fsync", "true"),
                flag("log-level", "warn"),
            ],
            Apiserver => vec![
                flag("etcd-servers", https("etcd")),
                flag("etcd-cafile", pki.ca_cert()),
                flag("etcd-certfile", pki.client_cert(&certs::ETCD_CLIENT)),
                flag("etcd-keyfile", pki.client_key(&certs::ETCD_CLIENT)),
                flag("bind-address", "127.0.0.1"),
                flag("advertise-address", "127.0.0.1"),
                // Endpoints may not hold loopback addresses, and nothing here dials the
                // `kubernetes` Service: no endpoint reconciler.
                flag("endpoint-reconciler-type", "none"),
                flag("secure-port", p.port("kube-apiserver").to_string()),
                flag("tls-cert-file", pki.serving_cert()),
                flag("tls-private-key-file", pki.serving_key()),
                flag("client-ca-file", pki.ca_cert()),
                flag("service-account-issuer", "https://kubernetes.default.svc.cluster.local"),
                flag("service-account-key-file", pki.sa_pub()),
                flag("service-account-signing-key-file", pki.sa_key()),
                flag("service-cluster-ip-range", SERVICE_RANGE),
                flag("authorization-mode", "RBAC"),
                flag("allow-privileged", "true"),
                flag("cert-dir", &self.tmp),
                flag("profiling", "false"),
            ],
            ControllerManager => {
                let mut flags = kube_loop_flags(p, pki, "kube-controller-manager", &self.controller_manager_kubeconfig);
                flags.extend([
                    flag("controllers", "*"),
                    // Binds PersistentVolumeClaims (no kubelet ever mounts them): without it a
                    // StatefulSet's pods stay Pending and charts that wait for them never install.
                    flag("enable-hostpath-provisioner", "true"),
                    flag("use-service-account-credentials", "true"),
                    flag("service-account-private-key-file", pki.sa_key()),
                    flag("root-ca-file", pki.ca_cert()),
                    flag("cluster-signing-cert-file", pki.ca_cert()),
                    flag("cluster-signing-key-file", pki.ca_key()),
                    flag("service-cluster-ip-range", SERVICE_RANGE),
                    flag("cluster-name", crate::naming::env_scoped(&self.env)),
                ]);
                flags
            }
            Scheduler => kube_loop_flags(p, pki, "kube-scheduler", &self.scheduler_kubeconfig),
            Kwok => vec![
                flag("kubeconfig", &self.kubeconfig),
                flag("config", &self.kwok_config),
                flag("manage-all-nodes", "false"),
                flag(
                    "manage-nodes-with-annotation-selector",
                    format!("{}={}", KWOK_NODE_ANNOTATION.0, KWOK_NODE_ANNOTATION.1),
                ),
                flag("server-address", p.addr("kwok")),
                flag("node-port", p.port("kwok-node").to_string()),
                flag("node-ip", NODE_IP),
                flag("cidr", POD_RANGE),
                flag("tls-cert-file", pki.serving_cert()),
                flag("tls-private-key-file", pki.serving_key()),
                flag("node-lease-duration-seconds", "40"),
            ],
            SourceController => {
                let mut flags = vec![
                    flag("storage-path", self.source_storage()),
                    flag("storage-addr", p.addr("source-controller-storage")),
                    flag("storage-adv-addr", p.addr("source-controller-storage")),
                ];
                flags.extend(flux_controller_flags(p, "source-controller"));
                flags
            }
            KustomizeController => flux_controller_flags(p, "kustomize-controller"),
            HelmController => {
                let mut flags = flux_controller_flags(p, "helm-controller");
                flags.push(flag("graceful-shutdown-timeout", "5s"));
                flags
            }
            Registry => vec!["serve".into(), self.registry_config.clone().into()],
        };
        let mut env: Vec<(&'static str, OsString)> =
            vec![("HOME", self.home.clone().into()), ("TMPDIR", self.tmp.clone().into())];
        if component.is_flux() {
            env.push(("KUBECONFIG", self.kubeconfig.clone().into()));
            env.push(("RUNTIME_NAMESPACE", FLUX_NAMESPACE.into()));
        }
        (args, env)
    }

    /// The registry's configuration file: plain HTTP on 127.0.0.1, storage under the env.
    pub fn registry_config_text(&self) -> String {
        format!(
            "version: 0.1\n\
             log:\n  level: info\n  formatter: text\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: {}\n",
            yaml_string(&self.registry_data().display().to_string()),
            self.ports.addr("registry"),
        )
    }
}

/// A YAML double-quoted string.
fn yaml_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

/// kwok's stage configuration: how simulated nodes and pods move through their lives.
pub(super) const KWOK_STAGES: [(&str, &str); 5] = [
    ("node-initialize", include_str!("../../../sim/kwok/node-initialize.yaml")),
    ("node-heartbeat", include_str!("../../../sim/kwok/node-heartbeat.yaml")),
    ("pod-ready", include_str!("../../../sim/kwok/pod-ready.yaml")),
    ("pod-complete", include_str!("../../../sim/kwok/pod-complete.yaml")),
    ("pod-delete", include_str!("../../../sim/kwok/pod-delete.yaml")),
];

/// All stages as one multi-document file for `kwok --config`.
pub(super) fn kwok_config_text() -> String {
    KWOK_STAGES.iter().map(|(_, text)| text.trim_end()).collect::<Vec<_>>().join("\n---\n") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_names_are_unique() {
        let mut all: Vec<&str> = Component::ALL.iter().flat_map(|c| c.ports()).copied().collect();
        let count = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), count);
    }

    #[test]
    fn kwok_stages_parse_as_stages() {
        for doc in serde_yaml::Deserializer::from_str(&kwok_config_text()) {
            let value = serde_yaml::Value::deserialize(doc).unwrap();
            assert_eq!(value["kind"], "Stage");
            assert_eq!(value["apiVersion"], "kwok.x-k8s.io/v1alpha1");
        }
        assert_eq!(serde_yaml::Deserializer::from_str(&kwok_config_text()).count(), KWOK_STAGES.len());
    }

    use serde::Deserialize;
}
