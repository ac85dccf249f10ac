//! The sim cluster behind the [`ClusterProvider`] interface, unchanged in behaviour: devenv
//! boots and owns it, and its pods never run.

use std::path::Path;

use futures_util::future::BoxFuture;

use super::{Sim, SimInfo};
use crate::config::profile::Provider;
use crate::providers::{
    Capabilities, ClusterInfo, ClusterIntent, ClusterProvider, ClusterStatus, Ensured, Error, LogLines, Registry,
};
use crate::ui::Reporter;

/// The sim cluster kept in an environment's state directory.
#[derive(Debug, Clone)]
pub struct SimCluster {
    sim: Sim,
}

impl SimCluster {
    pub fn new(state_dir: &Path) -> Self {
        SimCluster { sim: Sim::new(state_dir) }
    }
}

impl From<SimInfo> for ClusterInfo {
    fn from(info: SimInfo) -> Self {
        ClusterInfo {
            provider: Provider::Sim,
            kubeconfig: info.kubeconfig,
            context: info.context,
            api_server: info.api_server,
            // Every process runs on this machine: Flux pulls from where devenv pushes.
            registry: Registry::same(&info.registry),
        }
    }
}

fn sim_info(info: &ClusterInfo) -> SimInfo {
    SimInfo {
        kubeconfig: info.kubeconfig.clone(),
        context: info.context.clone(),
        api_server: info.api_server.clone(),
        registry: info.registry.host.clone(),
    }
}

impl ClusterProvider for SimCluster {
    fn kind(&self) -> Provider {
        Provider::Sim
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { runs_pods: false, owns_cluster: true }
    }

    fn preflight(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async { super::binaries().map(drop).map_err(Error::from) })
    }

    fn ensure<'a>(
        &'a self,
        env: &'a str,
        planned: &'a ClusterIntent,
        reporter: &'a dyn Reporter,
    ) -> BoxFuture<'a, Result<Ensured, Error>> {
        Box::pin(async move {
            let (info, carried_out) = self.sim.carry_out(env, Some(planned), reporter).await?;
            Ok(Ensured { info: info.into(), carried_out })
        })
    }

    fn intent<'a>(&'a self, env: &'a str) -> BoxFuture<'a, Result<ClusterIntent, Error>> {
        Box::pin(async move { Ok(self.sim.intent(env).await?) })
    }

    fn info(&self) -> Result<Option<ClusterInfo>, Error> {
        Ok(self.sim.info()?.map(ClusterInfo::from))
    }

    fn client<'a>(&'a self, info: &'a ClusterInfo) -> BoxFuture<'a, Result<kube::Client, Error>> {
        Box::pin(async move { Ok(super::client(&sim_info(info)).await?) })
    }

    fn status<'a>(&'a self, _info: &'a ClusterInfo) -> BoxFuture<'a, Result<ClusterStatus, Error>> {
        Box::pin(async move {
            let processes = self.sim.status().await?;
            let healthy = !processes.is_empty() && processes.iter().all(|p| p.healthy);
            let detail = match processes.iter().find(|p| !p.healthy) {
                None => "every process ready".to_string(),
                Some(process) => format!("`{}`: {}", process.name, process.detail),
            };
            Ok(ClusterStatus { healthy, detail, processes })
        })
    }

    fn delete<'a>(&'a self, purge: bool, reporter: &'a dyn Reporter) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(async move { Ok(self.sim.down(purge, reporter).await?) })
    }

    /// Its controllers are processes here, logging to files in the cluster's directory; the
    /// caller filters by time (`since` is not applied).
    fn controller_log<'a>(
        &'a self,
        _client: &'a kube::Client,
        controller: &'a str,
        follow: bool,
        _since: Option<std::time::Duration>,
    ) -> LogLines<'a> {
        use futures_util::{StreamExt, TryStreamExt};
        let path = self
            .sim
            .log_of(controller)
            .unwrap_or_else(|| self.sim.dir().join("logs").join(format!("{controller}.log")));
        let failed = {
            let path = path.clone();
            move |source| Error::ControllerLogFile { controller: controller.to_string(), path: path.clone(), source }
        };
        super::process::log_lines(path, follow).map_err(failed).boxed()
    }
}
