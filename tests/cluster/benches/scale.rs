//! Scale check: 10,000 nodes and 30,000 pods in one in-process server.

// Run with `cargo bench -p wasmdaemon-testcluster --bench scale`; prints timings and the
// resident set size of the server, which runs in a child process so client memory is not
// counted.

use std::time::Instant;

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use wasmdaemon_testcluster::{NodeShape, TestCluster};

const NODES: usize = 10_000;
const PODS: usize = 30_000;
const CONCURRENCY: usize = 64;

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn pod(i: usize) -> Pod {
    serde_json::from_value(json!({
        "metadata": {
            "name": format!("pod-{i}"),
            "labels": {"app": "bench", "shard": (i % 10).to_string()}
        },
        "spec": {
            "nodeName": format!("node-{}", i % NODES),
            "containers": [{"name": "main", "image": "registry.example/app:1",
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}],
        }
    }))
    .expect("valid pod")
}

/// Child mode: serve until stdin closes, after printing the URL.
async fn serve() -> Result<(), Box<dyn std::error::Error>> {
    let cluster = TestCluster::start().await?;
    println!("{}", cluster.url());
    let mut line = String::new();
    tokio::task::spawn_blocking(move || std::io::stdin().read_line(&mut line)).await??;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().any(|a| a == "--serve") {
        return serve().await;
    }
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .arg("--serve")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let mut url = String::new();
    if let Some(out) = child.stdout.take() {
        std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut url)?;
    }
    let client = kube::Client::try_from(kube::Config::new(url.trim().parse()?))?;
    let rss_mib = move || rss_mib(pid);
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let shape = NodeShape::new().cpu("16").memory("64Gi").gpu("nvidia", 1);
    println!("server RSS at start: {:.0} MiB", rss_mib());

    let start = Instant::now();
    stream::iter(0..NODES)
        .map(|i| {
            let nodes = nodes.clone();
            let node = shape.to_node(&format!("node-{i}"));
            async move { nodes.create(&PostParams::default(), &node).await }
        })
        .buffer_unordered(CONCURRENCY)
        .try_for_each(|_| async { Ok(()) })
        .await?;
    println!("create {NODES} nodes: {:.2?}", start.elapsed());

    let start = Instant::now();
    let listed = nodes.list(&ListParams::default()).await?;
    println!("list {} nodes: {:.2?}", listed.items.len(), start.elapsed());
    println!("server RSS with {NODES} nodes: {:.0} MiB", rss_mib());
    drop(listed);

    let start = Instant::now();
    stream::iter(0..PODS)
        .map(|i| {
            let pods = pods.clone();
            async move { pods.create(&PostParams::default(), &pod(i)).await }
        })
        .buffer_unordered(CONCURRENCY)
        .try_for_each(|_| async { Ok(()) })
        .await?;
    println!("create {PODS} pods: {:.2?}", start.elapsed());

    let start = Instant::now();
    let listed = pods.list(&ListParams::default()).await?;
    println!("list {} pods: {:.2?}", listed.items.len(), start.elapsed());
    drop(listed);

    let start = Instant::now();
    let mut pages = 0;
    let mut lp = ListParams::default().limit(500);
    loop {
        let page = pods.list(&lp).await?;
        pages += 1;
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    println!("list pods in {pages} pages of 500: {:.2?}", start.elapsed());

    let start = Instant::now();
    let on_node = pods
        .list(&ListParams::default().fields("spec.nodeName=node-7"))
        .await?;
    println!(
        "list {} pods on one node by field selector: {:.2?}",
        on_node.items.len(),
        start.elapsed()
    );

    let start = Instant::now();
    let (reader, writer) = kube::runtime::reflector::store::<Pod>();
    let watch = kube::runtime::reflector(
        writer,
        kube::runtime::watcher(pods.clone(), Default::default()),
    );
    let task = tokio::spawn(watch.for_each(|_| async {}));
    while reader.state().len() < PODS {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    println!(
        "reflector initial sync of {PODS} pods: {:.2?}",
        start.elapsed()
    );
    task.abort();
    println!(
        "server RSS with {NODES} nodes and {PODS} pods: {:.0} MiB",
        rss_mib()
    );
    drop(child.stdin.take());
    child.wait()?;
    Ok(())
}
