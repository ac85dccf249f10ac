//! Health checks over HTTP(S) on 127.0.0.1, through kube's HTTP stack: plain HTTP for etcd,
//! kwok, the Flux controllers and the registry; HTTPS verified against the cluster CA, with
//! the admin client certificate, for the Kubernetes components.

use std::time::Duration;

use super::components::Probe;

/// Longest a single attempt may take.
pub(super) const ATTEMPT_DEADLINE: Duration = Duration::from_secs(2);

pub(super) struct Prober {
    /// The admin client configuration; its URL is replaced per check.
    admin: kube::Config,
}

impl Prober {
    pub fn new(admin: kube::Config) -> Self {
        Prober { admin }
    }

    fn config(&self, probe: &Probe) -> Result<kube::Config, String> {
        let url = format!("{}://127.0.0.1:{}", if probe.tls { "https" } else { "http" }, probe.port);
        let uri: http::Uri = url.parse().map_err(|e| format!("bad URL {url}: {e}"))?;
        let mut config = if probe.tls {
            let mut config = self.admin.clone();
            config.cluster_url = uri;
            config
        } else {
            kube::Config::new(uri)
        };
        config.connect_timeout = Some(ATTEMPT_DEADLINE);
        config.read_timeout = Some(ATTEMPT_DEADLINE);
        config.write_timeout = Some(ATTEMPT_DEADLINE);
        Ok(config)
    }

    /// One GET; `Ok` carries the body of a 2xx answer, `Err` says what went wrong.
    pub async fn get(&self, probe: &Probe) -> Result<String, String> {
        if probe.port == 0 {
            return Err("no port recorded".to_string());
        }
        let client = kube::Client::try_from(self.config(probe)?).map_err(|e| e.to_string())?;
        let request = http::Request::get(probe.path).body(Vec::new()).map_err(|e| e.to_string())?;
        match tokio::time::timeout(ATTEMPT_DEADLINE, client.request_text(request)).await {
            Err(_) => Err(format!("no answer within {}s from {}", ATTEMPT_DEADLINE.as_secs(), probe.url())),
            Ok(Err(e)) => Err(describe(&e, probe)),
            Ok(Ok(body)) => Ok(body),
        }
    }

    /// One check: a 2xx answer (for etcd, one that says it is healthy).
    pub async fn check(&self, probe: &Probe) -> Result<(), String> {
        let body = self.get(probe).await?;
        if probe.path == "/health" && !body.contains("\"true\"") {
            return Err(format!("{} answered {}", probe.url(), body.trim()));
        }
        Ok(())
    }
}

fn describe(error: &kube::Error, probe: &Probe) -> String {
    match error {
        kube::Error::Api(status) => {
            // A failing /readyz lists every check; the failed ones start with `[-]`.
            let failed: Vec<&str> = status.message.lines().filter(|l| l.starts_with("[-]")).collect();
            let message = if failed.is_empty() { status.message.trim().to_string() } else { failed.join(", ") };
            format!("{} answered {} {message}", probe.url(), status.code)
        }
        other => {
            // The innermost cause says most (connection refused, certificate unknown …).
            let mut cause: &dyn std::error::Error = other;
            while let Some(next) = cause.source() {
                cause = next;
            }
            format!("{}: {cause}", probe.url())
        }
    }
}
