//! `TestCluster`: an in-process Kubernetes API server on 127.0.0.1 with fault injection.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::{AbortHandle, JoinSet};

use crate::faults::{Fault, RequestMatch};
use crate::server::{ServerOptions, Shared, router};

/// Errors starting or restarting a test cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Binding or re-binding the listening socket failed.
    #[error("binding 127.0.0.1: {0}")]
    Bind(#[source] std::io::Error),
    /// Writing the kubeconfig file failed.
    #[error("writing kubeconfig: {0}")]
    Kubeconfig(#[source] std::io::Error),
    /// Building the client failed.
    #[error("building client: {0}")]
    Client(#[source] kube::Error),
}

/// An in-process API server. Dropping it stops the server.
pub struct TestCluster {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: Mutex<AbortHandle>,
    dir: tempfile::TempDir,
    client: kube::Client,
}

impl std::fmt::Debug for TestCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCluster")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

async fn serve(listener: TcpListener, app: axum::Router) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let service = TowerToHyperService::new(app.clone());
                connections.spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

impl TestCluster {
    /// Starts a server with default options on an ephemeral port.
    pub async fn start() -> Result<Self, ClusterError> {
        Self::start_with(ServerOptions::default()).await
    }

    /// Starts a server with the given options on an ephemeral port.
    pub async fn start_with(options: ServerOptions) -> Result<Self, ClusterError> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(ClusterError::Bind)?;
        let addr = listener.local_addr().map_err(ClusterError::Bind)?;
        let shared = Shared::new(options);
        let server = tokio::spawn(serve(listener, router(shared.clone()))).abort_handle();
        let dir = tempfile::tempdir().map_err(ClusterError::Kubeconfig)?;
        std::fs::write(dir.path().join("kubeconfig"), kubeconfig_yaml(addr))
            .map_err(ClusterError::Kubeconfig)?;
        let client =
            kube::Client::try_from(Self::config_for(addr)).map_err(ClusterError::Client)?;
        Ok(Self {
            shared,
            addr,
            server: Mutex::new(server),
            dir,
            client,
        })
    }

    fn config_for(addr: SocketAddr) -> kube::Config {
        let uri = format!("http://{addr}").parse().unwrap_or_default();
        let mut config = kube::Config::new(uri);
        config.read_timeout = Some(Duration::from_secs(295));
        config
    }

    /// A client for this server (cheap to clone).
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// A client configuration for this server, to build differently configured clients.
    pub fn config(&self) -> kube::Config {
        Self::config_for(self.addr)
    }

    /// The server's base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Path of a kubeconfig file for this server, e.g. for `kubectl --kubeconfig`.
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// The latest resourceVersion handed out.
    pub fn resource_version(&self) -> u64 {
        self.shared.state().rv
    }

    /// Ends every open watch stream; clients see the response end and must re-watch.
    pub fn cut_watches(&self) {
        self.shared.cut_watches();
    }

    /// Fails the `nth` (1-based, counted from now) request matching `filter` with `fault`.
    pub fn fail_nth_request(&self, filter: RequestMatch, nth: u64, fault: Fault) {
        self.shared.faults().fail(filter, nth, 1, fault);
    }

    /// Fails `times` consecutive matching requests starting with the `nth`.
    pub fn fail_requests(&self, filter: RequestMatch, nth: u64, times: u64, fault: Fault) {
        self.shared.faults().fail(filter, nth, times, fault);
    }

    /// Delays every response to requests matching `filter` by `delay` (until faults are cleared).
    pub fn delay_responses(&self, filter: RequestMatch, delay: Duration) {
        self.shared.faults().delay(filter, delay);
    }

    /// Removes every injected failure and delay.
    pub fn clear_faults(&self) {
        self.shared.faults().clear();
    }

    /// Drops the watch history and cuts every watch: resuming from any resourceVersion seen so
    /// far answers 410 Gone (Expired), so watchers must relist.
    pub fn compact_history(&self) {
        self.shared.state().compact();
        self.shared.cut_watches();
    }

    async fn rebind(&self) -> Result<(), ClusterError> {
        let old = self
            .server
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        old.abort();
        let mut attempts = 0;
        let listener = loop {
            tokio::task::yield_now().await;
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if attempts < 100 => {
                    attempts += 1;
                    tracing::debug!("rebinding {}: {e}", self.addr);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => return Err(ClusterError::Bind(e)),
            }
        };
        let handle = tokio::spawn(serve(listener, router(self.shared.clone()))).abort_handle();
        *self.server.lock().unwrap_or_else(|p| p.into_inner()) = handle;
        Ok(())
    }

    /// Restarts the server on the same port keeping every object; open connections (and so
    /// watches) are dropped.
    pub async fn restart(&self) -> Result<(), ClusterError> {
        self.shared.cut_watches();
        self.rebind().await
    }

    /// Restarts the server on the same port with an empty store, as after losing etcd.
    pub async fn restart_empty(&self) -> Result<(), ClusterError> {
        self.shared.wipe();
        self.rebind().await
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.server
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .abort();
    }
}

fn kubeconfig_yaml(addr: SocketAddr) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: testcluster\n  cluster:\n    server: \
         http://{addr}\ncontexts:\n- name: testcluster\n  context:\n    cluster: testcluster\n    \
         user: testcluster\n    namespace: default\ncurrent-context: testcluster\nusers:\n- name: \
         testcluster\n  user: {{}}\n"
    )
}
