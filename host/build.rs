//! Builds the WebAssembly plugins in `plugins/` and tells the crate where each component is.
//!
//! The plugins are their own cargo workspace. This script runs a nested `cargo build --release
//! --target wasm32-wasip2` on it, in a target directory of its own (`<target>/wasm-plugins`) so
//! it never waits on the outer build's lock, and emits one `cargo:rustc-env` per plugin crate:
//!
//! - `wasmdaemon-plugin-<name>` → `WASMDAEMON_PLUGIN_<NAME>` (stock plugins),
//! - `wasmdaemon-test-plugin-<name>` → `WASMDAEMON_TEST_PLUGIN_<NAME>` (test plugins),
//!
//! with `-` turned into `_` and upper-cased, each the absolute path of the `.wasm` component.
//! Setting `WASMDAEMON_PREBUILT_PLUGINS` to a directory holding those `.wasm` files skips the
//! nested build.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

const WASM_TARGET: &str = "wasm32-wasip2";
const PREBUILT: &str = "WASMDAEMON_PREBUILT_PLUGINS";

/// The first bytes of a WebAssembly component: `\0asm`, version 0x0d, layer 1.
const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

/// Variables the outer cargo sets for this script, or a user sets for the host build, that would
/// make the nested build compile for the wrong target, with the wrong flags, in the wrong place,
/// or through clippy.
const CLEARED_VARIABLES: &[&str] = &[
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "RUSTDOCFLAGS",
    "CARGO_ENCODED_RUSTDOCFLAGS",
    "CARGO_BUILD_RUSTDOCFLAGS",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_BUILD_BUILD_DIR",
    "CARGO_BUILD_TARGET",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_BUILD_RUSTC_WORKSPACE_WRAPPER",
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_PRIMARY_PACKAGE",
    "OUT_DIR",
    "TARGET",
    "HOST",
    "PROFILE",
    "OPT_LEVEL",
    "DEBUG",
    "RUSTC_LINKER",
];

/// Prefixes of variables cleared for the same reason.
const CLEARED_PREFIXES: &[&str] = &["CARGO_CFG_", "CARGO_FEATURE_", "CARGO_PKG_", "DEP_"];

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir
        .parent()
        .expect("the host crate sits in the repository root");
    let plugins_dir = root.join("plugins");

    println!("cargo:rerun-if-changed={}", root.join("wit").display());
    println!("cargo:rerun-if-env-changed={PREBUILT}");
    for file in ["Cargo.toml", "Cargo.lock"] {
        println!(
            "cargo:rerun-if-changed={}",
            plugins_dir.join(file).display()
        );
    }

    let mut crates = Vec::new();
    find_crates(&plugins_dir, &mut crates);
    crates.sort();
    for (_, dir) in &crates {
        println!(
            "cargo:rerun-if-changed={}",
            dir.join("Cargo.toml").display()
        );
        println!("cargo:rerun-if-changed={}", dir.join("src").display());
    }

    let wasm_dir = match env::var_os(PREBUILT) {
        Some(dir) => PathBuf::from(dir),
        None => build(&plugins_dir),
    };

    for (package, _) in &crates {
        let Some(variable) = env_variable(package) else {
            continue;
        };
        let wasm = wasm_dir.join(format!("{}.wasm", package.replace('-', "_")));
        check_component(&wasm);
        println!("cargo:rustc-env={variable}={}", wasm.display());
    }
}

/// The environment variable naming a plugin crate's component, or `None` for a crate that is
/// not a plugin (the SDK).
fn env_variable(package: &str) -> Option<String> {
    let (prefix, name) = if let Some(name) = package.strip_prefix("wasmdaemon-test-plugin-") {
        ("WASMDAEMON_TEST_PLUGIN_", name)
    } else if let Some(name) = package.strip_prefix("wasmdaemon-plugin-") {
        ("WASMDAEMON_PLUGIN_", name)
    } else {
        return None;
    };
    (name != "sdk").then(|| format!("{prefix}{}", name.replace('-', "_").to_uppercase()))
}

/// Collects `(package name, crate directory)` of every crate under `dir`, skipping build
/// outputs.
fn find_crates(dir: &Path, crates: &mut Vec<(String, PathBuf)>) {
    let manifest = dir.join("Cargo.toml");
    if let Some(name) = fs::read_to_string(&manifest)
        .ok()
        .as_deref()
        .and_then(package_name)
    {
        crates.push((name, dir.to_path_buf()));
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let skip = name == "target" || name == "src" || name.to_string_lossy().starts_with('.');
        if !skip && path.is_dir() {
            find_crates(&path, crates);
        }
    }
}

/// The `name` in a manifest's `[package]` table.
fn package_name(manifest: &str) -> Option<String> {
    let mut in_package = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package && let Some(value) = line.strip_prefix("name") {
            let value = value.trim_start().strip_prefix('=')?.trim();
            return Some(value.trim_matches('"').to_owned());
        }
    }
    None
}

/// Runs the nested cargo build and returns the directory holding the components.
fn build(plugins_dir: &Path) -> PathBuf {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    // Shared by every profile of the outer build, so debug, release and clippy runs reuse one
    // plugin build. The target directory root is the ancestor holding cargo's CACHEDIR.TAG.
    let target_root = out_dir
        .ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .unwrap_or(&out_dir);
    let target_dir = target_root.join("wasm-plugins");

    let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut command = Command::new(&cargo);
    command
        .arg("build")
        .arg("--release")
        .arg("--workspace")
        .args(["--target", WASM_TARGET])
        .arg("--manifest-path")
        .arg(plugins_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(plugins_dir);
    for variable in CLEARED_VARIABLES {
        command.env_remove(variable);
    }
    for (variable, _) in env::vars_os() {
        let text = variable.to_string_lossy();
        if CLEARED_PREFIXES
            .iter()
            .any(|prefix| text.starts_with(prefix))
        {
            command.env_remove(&variable);
        }
    }

    let output = command.output().unwrap_or_else(|error| {
        panic!(
            "could not run `{}` to build the wasm plugins: {error}",
            cargo.to_string_lossy()
        )
    });
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let missing_target = stderr.contains("may not be installed")
            || stderr.contains("can't find crate for `core`")
            || stderr.contains("can't find crate for `std`");
        let hint = if missing_target {
            format!("the {WASM_TARGET} target is missing: rustup target add {WASM_TARGET}")
        } else {
            format!(
                "to reproduce: cargo build --release --target {WASM_TARGET} --manifest-path \
                 plugins/Cargo.toml (needs the target: rustup target add {WASM_TARGET})"
            )
        };
        panic!(
            "building the wasm plugins in {} failed ({}).\n{hint}\n\n{stderr}",
            plugins_dir.display(),
            output.status
        );
    }
    target_dir.join(WASM_TARGET).join("release")
}

/// Fails the build unless `path` is a WebAssembly component.
fn check_component(path: &Path) {
    let mut header = [0u8; 8];
    let read = fs::File::open(path).and_then(|mut file| file.read_exact(&mut header));
    if let Err(error) = read {
        panic!(
            "plugin component {} is missing or unreadable: {error}",
            path.display()
        );
    }
    assert!(
        header == COMPONENT_HEADER,
        "{} is not a WebAssembly component (header {header:02x?}); the {WASM_TARGET} target \
         links components through wasm-component-ld, which this toolchain should provide",
        path.display()
    );
}
