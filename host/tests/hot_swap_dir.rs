//! Hot swap through a plugin directory: every way a file changes is picked up, a bad version
//! never replaces a good one, and decisions keep flowing while versions change.

mod hot_swap_common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use hot_swap_common::*;
use wasmdaemon::plugin::digest_of;
use wasmdaemon::registry::dir::DirWatch;
use wasmdaemon::registry::{FailureKind, PluginEvent, Registry, RegistryError};

const POLL: Duration = Duration::from_millis(50);

fn watch(store: &Arc<wasmdaemon::registry::PluginStore>, dir: &std::path::Path) -> DirWatch {
    DirWatch::start(store.clone(), dir.to_path_buf(), POLL).expect("start the directory watch")
}

#[test]
fn decisions_continue_on_many_threads_while_the_plugin_is_swapped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.wasm");
    let versions: Vec<Vec<u8>> = (0..3).map(|i| echo_version(&format!("v{i}"))).collect();
    std::fs::write(&path, &versions[0]).unwrap();
    let sets = Sets::default();
    for i in 0..10 {
        sets.add("p", set_use(&format!("set-{i}"), "null", None));
    }
    let store = store(engine(), &sets, false);
    let _watch = watch(&store, dir.path());
    let registry = Arc::new(Registry::live(store.clone()));

    let stop = Arc::new(AtomicBool::new(false));
    let decided = Arc::new(AtomicUsize::new(0));
    let batch = nodes(50);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (registry, stop, decided, batch) = (
                registry.clone(),
                stop.clone(),
                decided.clone(),
                batch.clone(),
            );
            std::thread::spawn(move || -> Result<(), String> {
                let mut i = t;
                while !stop.load(Ordering::Relaxed) {
                    let plugin = registry.load("p", None).map_err(|e| e.to_string())?;
                    let set = set_info(&format!("set-{}", i % 10), "null");
                    let answer = plugin.decide(&set, &batch).map_err(|e| e.to_string())?;
                    if answer.len() != batch.nodes.len() {
                        return Err(format!(
                            "{} decisions for {} nodes",
                            answer.len(),
                            batch.nodes.len()
                        ));
                    }
                    decided.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
                Ok(())
            })
        })
        .collect();

    for round in 1..=6 {
        let bytes = &versions[round % versions.len()];
        let want = digest_of(bytes);
        let before = decided.load(Ordering::Relaxed);
        write_atomically(&path, bytes);
        wait_until(&store, &format!("round {round} swaps to {want}"), || {
            current(&store, "p") == want
        });
        wait_until(&store, "decisions are made on the new version", || {
            decided.load(Ordering::Relaxed) > before + 8
        });
    }
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        let outcome = thread.join().expect("decision thread panicked");
        assert_eq!(outcome, Ok(()));
    }
    assert_eq!(
        store.metrics().swaps_total,
        7,
        "the first load and six swaps"
    );
    assert!(store.metrics().swap_failures_total.is_empty());
}

#[test]
fn bytes_that_do_not_compile_leave_the_old_version_active() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.wasm");
    let good = echo_version("good");
    std::fs::write(&path, &good).unwrap();
    let sets = Sets::default();
    sets.add("p", set_use("uses-p", "null", None));
    let store = store(engine(), &sets, false);
    let mut events = store.subscribe();
    let _watch = watch(&store, dir.path());
    assert_eq!(current(&store, "p"), digest_of(&good));

    let truncated = good[..good.len() / 2].to_vec();
    for (bad, what) in [
        (b"not a component".to_vec(), "text"),
        (CORE_MODULE.to_vec(), "a core module"),
        (truncated, "a truncated component"),
    ] {
        write_atomically(&path, &bad);
        let failure = next_failure(&store, &mut events, &digest_of(&bad));
        assert_eq!(failure.kind, FailureKind::Compile, "{what}: {failure}");
        assert_eq!(failure.sets, vec!["default/uses-p".to_string()]);
        assert_eq!(current(&store, "p"), digest_of(&good), "{what}");
    }
    let status = store.status("p").unwrap();
    assert_eq!(
        status.last_failure.map(|f| f.kind),
        Some(FailureKind::Compile)
    );
    assert_eq!(store.metrics().swap_failures_total.get("compile"), Some(&3));
}

#[test]
fn a_component_that_is_not_a_placement_plugin_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.wasm");
    let good = echo_version("good");
    std::fs::write(&path, &good).unwrap();
    let store = store(engine(), &Sets::default(), false);
    let mut events = store.subscribe();
    let _watch = watch(&store, dir.path());

    write_atomically(&path, EMPTY_COMPONENT);
    let failure = next_failure(&store, &mut events, &digest_of(EMPTY_COMPONENT));
    assert_eq!(failure.kind, FailureKind::Instantiate, "{failure}");
    assert_eq!(current(&store, "p"), digest_of(&good));
    assert_eq!(
        store.metrics().swap_failures_total.get("instantiate"),
        Some(&1)
    );
}

#[test]
fn a_component_whose_describe_traps_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.wasm");
    let good = echo_version("good");
    std::fs::write(&path, &good).unwrap();
    let store = store(engine(), &Sets::default(), false);
    let mut events = store.subscribe();
    let _watch = watch(&store, dir.path());

    let trapping = bytes_of(env!("WASMDAEMON_TEST_PLUGIN_DESCRIBE_TRAP"));
    write_atomically(&path, &trapping);
    let failure = next_failure(&store, &mut events, &digest_of(&trapping));
    assert_eq!(failure.kind, FailureKind::Describe, "{failure}");
    assert_eq!(current(&store, "p"), digest_of(&good));
}

#[test]
fn a_version_that_rejects_a_sets_config_is_refused_for_every_set() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.wasm");
    let v1 = echo_version("v1");
    std::fs::write(&path, &v1).unwrap();
    let sets = Sets::default();
    sets.add("p", set_use("accepted", "null", None));
    sets.add("p", set_use("edited", "null", None));
    let store = store(engine(), &sets, false);
    let mut events = store.subscribe();
    let _watch = watch(&store, dir.path());

    sets.replace(
        "p",
        set_use("edited", r#"{"reject": "too many widgets"}"#, None),
    );
    let v2 = echo_version("v2");
    write_atomically(&path, &v2);
    let failure = next_failure(&store, &mut events, &digest_of(&v2));

    assert_eq!(failure.kind, FailureKind::ValidateConfig);
    assert_eq!(failure.sets, vec!["default/edited".to_string()]);
    assert!(failure.message.contains("too many widgets"), "{failure}");
    assert_eq!(current(&store, "p"), digest_of(&v1), "both sets stay on v1");

    sets.replace("p", set_use("edited", "null", None));
    wait_until(
        &store,
        "v2 is offered again once the set no longer conflicts",
        || current(&store, "p") == digest_of(&v2),
    );
    let v3 = echo_version("v3");
    write_atomically(&path, &v3);
    wait_until(&store, "v3 becomes current", || {
        current(&store, "p") == digest_of(&v3)
    });
    assert!(store.status("p").unwrap().last_failure.is_none());
}

#[test]
fn swapping_back_to_an_earlier_version_does_not_compile_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.wasm");
    let (v1, v2) = (echo_version("v1"), echo_version("v2"));
    std::fs::write(&path, &v1).unwrap();
    let engine = engine();
    let store = store(engine.clone(), &Sets::default(), false);
    let _watch = watch(&store, dir.path());

    write_atomically(&path, &v2);
    wait_until(&store, "v2 is current", || {
        current(&store, "p") == digest_of(&v2)
    });
    let compiled = engine.compilations();
    write_atomically(&path, &v1);
    wait_until(&store, "v1 is current again", || {
        current(&store, "p") == digest_of(&v1)
    });

    assert_eq!(engine.compilations(), compiled);
    assert_eq!(store.metrics().swaps_total, 3);
}

#[test]
fn deleting_a_plugin_in_use_keeps_its_last_version_flagged_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (used, unused) = (dir.path().join("used.wasm"), dir.path().join("unused.wasm"));
    let v1 = echo_version("v1");
    std::fs::write(&used, &v1).unwrap();
    std::fs::write(&unused, echo_version("other")).unwrap();
    let sets = Sets::default();
    sets.add("used", set_use("needs-it", "null", None));
    let store = store(engine(), &sets, false);
    let mut events = store.subscribe();
    let _watch = watch(&store, dir.path());
    let registry = Registry::live(store.clone());

    std::fs::remove_file(&used).unwrap();
    std::fs::remove_file(&unused).unwrap();
    let mut removed = Vec::new();
    while removed.len() < 2 {
        match recv(&store, &mut events) {
            PluginEvent::Removed { plugin, in_use, .. } => removed.push((plugin, in_use)),
            PluginEvent::Swapped { .. } => {}
            PluginEvent::SwapFailed(failure) => panic!("unexpected failure: {failure}"),
        }
    }
    removed.sort();
    assert_eq!(
        removed,
        vec![
            ("unused".to_string(), vec![]),
            ("used".to_string(), vec!["default/needs-it".to_string()]),
        ]
    );

    let status = store.status("used").expect("the used plugin is kept");
    assert!(status.removed);
    assert_eq!(registry.load("used", None).unwrap().digest, digest_of(&v1));
    assert!(matches!(
        registry.load("unused", None),
        Err(RegistryError::Unknown { .. })
    ));

    std::fs::write(&used, &v1).unwrap();
    wait_until(&store, "the restored file clears the flag", || {
        store.status("used").is_some_and(|s| !s.removed)
    });
}

#[test]
fn a_new_file_a_rewrite_in_place_and_a_rename_are_all_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.wasm");
    let store = store(engine(), &Sets::default(), false);
    let _watch = watch(&store, dir.path());
    assert!(store.status("p").is_none());

    let (v1, v2, v3) = (echo_version("v1"), echo_version("v2"), echo_version("v3"));
    std::fs::write(&path, &v1).unwrap();
    wait_until(&store, "the new file loads", || {
        current(&store, "p") == digest_of(&v1)
    });
    std::fs::write(&path, &v2).unwrap();
    wait_until(&store, "the rewrite loads", || {
        current(&store, "p") == digest_of(&v2)
    });
    write_atomically(&path, &v3);
    wait_until(&store, "the rename loads", || {
        current(&store, "p") == digest_of(&v3)
    });
}

#[cfg(unix)]
#[test]
fn a_configmap_volume_symlink_swap_is_picked_up() {
    use std::os::unix::fs::symlink;

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (v1, v2) = (echo_version("v1"), echo_version("v2"));
    std::fs::create_dir(root.join("..2024_01_01_00_00_00.1")).unwrap();
    std::fs::write(root.join("..2024_01_01_00_00_00.1/p.wasm"), &v1).unwrap();
    symlink("..2024_01_01_00_00_00.1", root.join("..data")).unwrap();
    symlink("..data/p.wasm", root.join("p.wasm")).unwrap();

    let store = store(engine(), &Sets::default(), false);
    let _watch = watch(&store, root);
    assert_eq!(current(&store, "p"), digest_of(&v1));

    std::fs::create_dir(root.join("..2024_01_01_00_01_00.2")).unwrap();
    std::fs::write(root.join("..2024_01_01_00_01_00.2/p.wasm"), &v2).unwrap();
    symlink("..2024_01_01_00_01_00.2", root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    std::fs::remove_dir_all(root.join("..2024_01_01_00_00_00.1")).unwrap();

    wait_until(&store, "the swapped link loads v2", || {
        current(&store, "p") == digest_of(&v2)
    });
    assert!(store.metrics().swap_failures_total.is_empty());
    assert_eq!(
        store.names(),
        vec!["p".to_string()],
        "the ..data entries are not plugins"
    );
}

#[test]
fn a_set_pinned_to_a_digest_keeps_that_version_across_swaps() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.wasm");
    let (v1, v2) = (echo_version("v1"), echo_version("v2"));
    let (d1, d2) = (digest_of(&v1), digest_of(&v2));
    std::fs::write(&path, &v1).unwrap();
    let sets = Sets::default();
    sets.add("p", set_use("pinned", "null", Some(&d1)));
    sets.add("p", set_use("floating", "null", None));
    let store = store(engine(), &sets, false);
    let _watch = watch(&store, dir.path());
    let registry = Registry::live(store.clone());

    write_atomically(&path, &v2);
    wait_until(&store, "v2 is current", || current(&store, "p") == d2);

    assert_eq!(
        registry.load("p", Some(&d1)).unwrap().digest,
        d1,
        "the pinned set keeps v1"
    );
    assert_eq!(registry.load("p", None).unwrap().digest, d2);
    let unknown = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    match registry.load("p", Some(unknown)) {
        Err(RegistryError::DigestMismatch { actual, .. }) => assert_eq!(actual, d2),
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
}

#[test]
fn a_user_plugin_with_a_stock_name_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let replacement = echo_version("not-hardware");
    std::fs::write(dir.path().join("hardware.wasm"), &replacement).unwrap();

    let strict = store(engine(), &Sets::default(), false);
    let _strict_watch = watch(&strict, dir.path());
    let failure = strict
        .failure_without_version("hardware")
        .expect("a refusal");
    assert_eq!(failure.kind, FailureKind::ShadowsStock);
    assert!(
        failure.message.contains("--allow-stock-override"),
        "{failure}"
    );
    let stock = Registry::live(strict.clone())
        .load("hardware", None)
        .unwrap();
    assert_eq!(
        stock.digest,
        digest_of(&bytes_of(env!("WASMDAEMON_PLUGIN_HARDWARE")))
    );

    let lenient = store(engine(), &Sets::default(), true);
    let _lenient_watch = watch(&lenient, dir.path());
    let user = Registry::live(lenient.clone())
        .load("hardware", None)
        .unwrap();
    assert_eq!(user.digest, digest_of(&replacement));
}

/// The next refusal of `digest`, skipping other events.
fn next_failure(
    store: &wasmdaemon::registry::PluginStore,
    events: &mut tokio::sync::broadcast::Receiver<PluginEvent>,
    digest: &str,
) -> wasmdaemon::registry::SwapFailure {
    loop {
        if let PluginEvent::SwapFailed(failure) = recv(store, events)
            && failure.digest.as_deref() == Some(digest)
        {
            return failure;
        }
    }
}

fn recv(
    store: &wasmdaemon::registry::PluginStore,
    events: &mut tokio::sync::broadcast::Receiver<PluginEvent>,
) -> PluginEvent {
    let mut event = None;
    wait_until(store, "the next plugin event", || {
        event = events.try_recv().ok();
        event.is_some()
    });
    event.expect("checked by the wait")
}

#[test]
fn a_plugin_whose_only_version_was_refused_says_so_when_a_set_asks_for_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("broken.wasm"), b"not a component").unwrap();
    let store = store(engine(), &Sets::default(), false);
    let _watch = watch(&store, dir.path());
    let error = Registry::live(store.clone())
        .load("broken", None)
        .expect_err("no good version");
    let text = error.to_string();
    assert!(
        text.contains("its only version") && text.contains("was refused (compile)"),
        "{text}"
    );
}
