//! Runs a test API server until interrupted, for poking at it with kubectl.

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cluster = wasmdaemon_testcluster::TestCluster::start().await?;
    println!(
        "kubectl --kubeconfig {} get nodes",
        cluster.kubeconfig_path().display()
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
