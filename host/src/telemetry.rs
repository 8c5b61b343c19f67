//! Telemetry: the controller's counters and a small HTTP endpoint serving them, with the
//! plugin swap counters, in the Prometheus text format.
//!
//! The endpoint answers `GET /metrics` and `GET /healthz` and nothing else. It reads at most
//! [`MAX_REQUEST`] bytes of a request and gives a client [`READ_TIMEOUT`] to send them, so a
//! slow or hostile scraper cannot hold a task or memory for long.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Longest request head read.
const MAX_REQUEST: usize = 8 * 1024;
/// Time a client has to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// What the controller counts. Shared by every reconcile; each update is one atomic add.
#[derive(Debug, Default)]
pub struct ControllerMetrics {
    pub reconciles: Counter,
    pub reconcile_errors: Counter,
    /// Placement-relevant node changes taken from the watch.
    pub node_changes: Counter,
    /// Set reconciles requested by those changes (a change concerns only some sets).
    pub node_triggers: Counter,
    /// Nodes decided by the planner (predicates, and the plugin when the set has one).
    pub nodes_decided: Counter,
    pub pods_created: Counter,
    pub pods_deleted: Counter,
    pub pod_write_failures: Counter,
    /// Passes that left a set alone because its plugin failed.
    pub plugin_failures: Counter,
    /// Passes that stopped after deciding: no decision changed and nothing else did.
    pub quiet_passes: Counter,
    /// Nodes in the node table now.
    pub nodes: AtomicU64,
}

impl ControllerMetrics {
    /// The counters in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counters: [(&str, &str, &Counter); 10] = [
            (
                "reconciles_total",
                "Set reconciles that finished.",
                &self.reconciles,
            ),
            (
                "reconcile_errors_total",
                "Set reconciles that failed and will be retried.",
                &self.reconcile_errors,
            ),
            (
                "node_changes_total",
                "Placement-relevant node changes seen (a first list counts every node).",
                &self.node_changes,
            ),
            (
                "node_triggered_reconciles_total",
                "Set reconciles requested by node changes.",
                &self.node_triggers,
            ),
            (
                "nodes_decided_total",
                "Node decisions made by the planner.",
                &self.nodes_decided,
            ),
            ("pods_created_total", "Pods created.", &self.pods_created),
            ("pods_deleted_total", "Pods deleted.", &self.pods_deleted),
            (
                "pod_write_failures_total",
                "Pod creates and deletes the API server refused.",
                &self.pod_write_failures,
            ),
            (
                "plugin_failures_total",
                "Passes that left a set alone because its plugin failed.",
                &self.plugin_failures,
            ),
            (
                "quiet_reconciles_total",
                "Reconciles that stopped after deciding because nothing had changed.",
                &self.quiet_passes,
            ),
        ];
        for (name, help, counter) in counters {
            let _ = writeln!(out, "# HELP wasmdaemon_{name} {help}");
            let _ = writeln!(out, "# TYPE wasmdaemon_{name} counter");
            let _ = writeln!(out, "wasmdaemon_{name} {}", counter.get());
        }
        let _ = writeln!(
            out,
            "# HELP wasmdaemon_nodes Nodes known to the controller."
        );
        let _ = writeln!(out, "# TYPE wasmdaemon_nodes gauge");
        let _ = writeln!(
            out,
            "wasmdaemon_nodes {}",
            self.nodes.load(Ordering::Relaxed)
        );
        out
    }
}

/// Produces the metrics page on each scrape.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Serves `render` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, render: Render) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let render = render.clone();
                tokio::spawn(async move {
                    if let Err(error) = answer(stream, &render).await {
                        tracing::debug!(%error, "metrics request failed");
                    }
                });
            }
            Err(error) => {
                tracing::warn!(%error, "failed to accept a metrics connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads one request head and writes one response, then closes the connection.
async fn answer(mut stream: TcpStream, render: &Render) -> std::io::Result<()> {
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(head) => head?,
        Err(_) => return Ok(()),
    };
    let (status, extra, content_type, body) = respond(&head, render);
    let response = format!(
        "HTTP/1.1 {status}\r\n{extra}Content-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    if !head.starts_with("HEAD ") {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await
}

/// The request head, up to its blank line or [`MAX_REQUEST`] bytes.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// Status line, extra headers, content type and body for a request head.
fn respond(head: &str, render: &Render) -> (&'static str, &'static str, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    let line = head.lines().next().unwrap_or_default();
    let parts: Vec<&str> = line.split(' ').collect();
    let [method, target, version] = parts[..] else {
        return (
            "400 Bad Request",
            "",
            TEXT,
            "malformed request line\n".to_string(),
        );
    };
    let is_token = !method.is_empty() && method.bytes().all(|b| b.is_ascii_uppercase());
    if !is_token || target.is_empty() || !version.starts_with("HTTP/") {
        return (
            "400 Bad Request",
            "",
            TEXT,
            "malformed request line\n".to_string(),
        );
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        let body = "only HTTP/1.0 and HTTP/1.1\n".to_string();
        return ("505 HTTP Version Not Supported", "", TEXT, body);
    }
    if method != "GET" && method != "HEAD" {
        let body = "only GET and HEAD\n".to_string();
        return ("405 Method Not Allowed", "Allow: GET, HEAD\r\n", TEXT, body);
    }
    // The absolute form (`http://host/metrics`) names the same resource as its path.
    let target = match target.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    };
    match target.split('?').next().unwrap_or("") {
        "/metrics" => {
            let kind = "text/plain; version=0.0.4; charset=utf-8";
            ("200 OK", "", kind, render())
        }
        "/healthz" => ("200 OK", "", TEXT, "ok\n".to_string()),
        _ => (
            "404 Not Found",
            "",
            TEXT,
            "try /metrics or /healthz\n".to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn request(addr: std::net::SocketAddr, raw: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(raw.as_bytes()).await.unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).await.unwrap();
        out
    }

    async fn server(metrics: Arc<ControllerMetrics>) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, Arc::new(move || metrics.render())));
        addr
    }

    #[tokio::test]
    async fn metrics_are_served_with_current_values() {
        let metrics = Arc::new(ControllerMetrics::default());
        let addr = server(metrics.clone()).await;
        metrics.pods_created.add(3);
        let page = request(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
        assert!(
            page.contains("\nwasmdaemon_pods_created_total 3\n"),
            "{page}"
        );
        assert!(page.contains("# TYPE wasmdaemon_nodes gauge\n"), "{page}");

        metrics.pods_created.inc();
        let page = request(addr, "GET /metrics?x=1 HTTP/1.0\r\n\r\n").await;
        assert!(
            page.contains("\nwasmdaemon_pods_created_total 4\n"),
            "{page}"
        );
    }

    #[tokio::test]
    async fn other_paths_and_methods_are_refused() {
        let addr = server(Arc::default()).await;
        let health = request(addr, "GET /healthz HTTP/1.1\r\n\r\n").await;
        assert!(health.starts_with("HTTP/1.1 200 OK") && health.ends_with("ok\n"));
        let missing = request(addr, "GET /secrets HTTP/1.1\r\n\r\n").await;
        assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
        let post = request(addr, "POST /metrics HTTP/1.1\r\n\r\n").await;
        assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
        assert!(post.contains("\r\nAllow: GET, HEAD\r\n"), "{post}");
        let absolute = request(addr, "GET http://x:9090/metrics HTTP/1.1\r\n\r\n").await;
        assert!(absolute.starts_with("HTTP/1.1 200 OK"), "{absolute}");
        for bad in [
            "\u{0}\u{1}garbage\r\n\r\n",
            "get /metrics HTTP/1.1\r\n\r\n",
            "GET /healthz FOO\r\n\r\n",
            "GET /healthz\r\n\r\n",
            "\r\n\r\n",
        ] {
            let answer = request(addr, bad).await;
            assert!(answer.starts_with("HTTP/1.1 400 "), "{bad:?}: {answer}");
        }
        let future = request(addr, "GET /healthz HTTP/9.9\r\n\r\n").await;
        assert!(future.starts_with("HTTP/1.1 505 "), "{future}");
        let head = request(addr, "HEAD /metrics HTTP/1.1\r\n\r\n").await;
        assert!(
            head.starts_with("HTTP/1.1 200 OK") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
    }

    #[tokio::test]
    async fn an_endless_request_head_is_cut_off() {
        let addr = server(Arc::default()).await;
        let junk = "X".repeat(MAX_REQUEST * 4);
        let mut stream = TcpStream::connect(addr).await.unwrap();
        // The server stops reading after MAX_REQUEST bytes and answers; the rest may be
        // refused by a reset, which is fine.
        let _ = stream.write_all(junk.as_bytes()).await;
        let mut out = String::new();
        let _ = stream.read_to_string(&mut out).await;
        assert!(out.is_empty() || out.starts_with("HTTP/1.1 400 "), "{out}");
    }
}
