//! A port of a pod on 127.0.0.1, as `kubectl port-forward` does it: each connection to the
//! local port is a stream of the API server's `pods/portforward`. In-cluster substitutes are
//! reached this way while devenv makes their resources (buckets, queues, secrets), which it
//! does from this machine exactly as for a container.

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Forwarding until dropped.
pub struct Forward {
    pub port: u16,
    accepting: JoinHandle<()>,
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

/// Listens on a free port of 127.0.0.1 and forwards each connection to `remote` of `pod`.
pub async fn open(pods: Api<Pod>, pod: &str, remote: u16) -> std::io::Result<Forward> {
    let listener = TcpListener::bind((crate::ports::LOOPBACK, 0)).await?;
    let port = listener.local_addr()?.port();
    let pod = pod.to_string();
    let accepting = tokio::spawn(async move {
        while let Ok((mut connection, _)) = listener.accept().await {
            let (pods, pod) = (pods.clone(), pod.clone());
            tokio::spawn(async move {
                let Ok(mut forwarder) = pods.portforward(&pod, &[remote]).await else { return };
                if let Some(mut upstream) = forwarder.take_stream(remote) {
                    let _ = tokio::io::copy_bidirectional(&mut connection, &mut upstream).await;
                }
                let _ = forwarder.join().await;
            });
        }
    });
    Ok(Forward { port, accepting })
}
