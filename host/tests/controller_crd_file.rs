//! `examples/crd.yaml` is exactly what `wasmdaemon crd` prints.

use kube::CustomResourceExt;
use wasmdaemon::crd::WasmDaemonSet;

#[test]
fn the_example_crd_matches_the_generated_one() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/crd.yaml");
    let file = std::fs::read_to_string(path).expect("examples/crd.yaml is readable");
    let generated = serde_yaml::to_string(&WasmDaemonSet::crd()).expect("CRD serializes");
    assert!(
        file == generated,
        "examples/crd.yaml is stale; regenerate it with `cargo run -p wasmdaemon -- crd > \
         examples/crd.yaml`"
    );
}
