//! The compiled-plugin disk cache: a restarted host loads without compiling, and a cache file
//! that is damaged is compiled again rather than trusted.

mod hot_swap_common;

use hot_swap_common::*;
use wasmdaemon::plugin::digest_of;

fn hardware() -> Vec<u8> {
    bytes_of(env!("WASMDAEMON_PLUGIN_HARDWARE"))
}

#[test]
fn a_restarted_engine_loads_from_the_disk_cache_without_compiling() {
    let cache = tempfile::tempdir().unwrap();
    let bytes = hardware();

    let first = engine().with_disk_cache(cache.path()).unwrap();
    let loaded = first.load("hardware", &bytes).unwrap();
    assert_eq!(first.compilations(), 1);

    let restarted = engine().with_disk_cache(cache.path()).unwrap();
    let reloaded = restarted.load("hardware", &bytes).unwrap();
    assert_eq!(restarted.compilations(), 0, "the component came from disk");
    assert_eq!(restarted.disk_cache().unwrap().stats().hits, 1);
    assert_eq!(reloaded.digest, loaded.digest);
    assert_eq!(reloaded.info, loaded.info);

    let set = set_info(
        "cached",
        r#"{"rules": [{"when": {"arch": ["arm64"]}, "skip": "arm"}]}"#,
    );
    let batch = nodes(3);
    assert_eq!(
        reloaded.decide(&set, &batch).unwrap(),
        loaded.decide(&set, &batch).unwrap(),
        "the deserialized component decides as the compiled one"
    );
}

#[test]
fn a_corrupted_cache_file_is_compiled_again_and_replaced() {
    let cache = tempfile::tempdir().unwrap();
    let bytes = hardware();
    let first = engine().with_disk_cache(cache.path()).unwrap();
    first.load("hardware", &bytes).unwrap();
    let file = first.disk_cache().unwrap().path(&digest_of(&bytes));

    let mut damaged = std::fs::read(&file).unwrap();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0xff;
    std::fs::write(&file, &damaged).unwrap();

    let second = engine().with_disk_cache(cache.path()).unwrap();
    second.load("hardware", &bytes).unwrap();
    assert_eq!(second.compilations(), 1, "the damaged file was not used");
    assert_eq!(second.disk_cache().unwrap().stats().rejected, 1);

    let third = engine().with_disk_cache(cache.path()).unwrap();
    third.load("hardware", &bytes).unwrap();
    assert_eq!(third.compilations(), 0, "the rebuilt file is used");
}

#[test]
fn a_truncated_cache_file_is_compiled_again() {
    let cache = tempfile::tempdir().unwrap();
    let bytes = echo();
    let first = engine().with_disk_cache(cache.path()).unwrap();
    first.load("echo", &bytes).unwrap();
    let file = first.disk_cache().unwrap().path(&digest_of(&bytes));
    let whole = std::fs::read(&file).unwrap();
    std::fs::write(&file, &whole[..whole.len() / 3]).unwrap();

    let second = engine().with_disk_cache(cache.path()).unwrap();
    let loaded = second.load("echo", &bytes).unwrap();
    assert_eq!(second.compilations(), 1);
    assert_eq!(loaded.digest, digest_of(&bytes));
}

#[cfg(unix)]
#[test]
fn a_cache_directory_other_users_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;

    let cache = tempfile::tempdir().unwrap();
    std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let refused = engine().with_disk_cache(cache.path());
    assert!(
        refused.is_err(),
        "a world-writable cache directory must not be trusted"
    );
}
