//! Builds the built-in adapters (`plugins/*`) for `wasm32-wasip2` and embeds them, so one
//! `chatd` binary works with no other files.
//!
//! The adapters are built by a nested `cargo build` into their own target directory (the way
//! wasmtime builds its test programs), with the workspace's `adapter` profile.

use std::path::{Path, PathBuf};
use std::process::Command;

/// (adapter name, cargo package) of every built-in adapter.
const BUILTINS: &[(&str, &str)] = &[
    ("ollama", "chatd-adapter-ollama"),
    ("ollama_cloud", "chatd-adapter-ollama_cloud"),
    ("openai_compat", "chatd-adapter-openai_compat"),
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let workspace = manifest_dir.parent().unwrap().to_owned();
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("plugins").display()
    );
    println!("cargo:rerun-if-changed={}", workspace.join("wit").display());
    // The `adapter` profile and dependency versions live in the workspace manifest and lock.
    for file in ["Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", workspace.join(file).display());
    }
    println!("cargo:rerun-if-env-changed=CHATD_ADAPTER_TARGET_DIR");

    let target_dir = adapter_target_dir(&workspace);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&workspace)
        .args(["build", "--target", "wasm32-wasip2", "--profile", "adapter"])
        .arg("--target-dir")
        .arg(&target_dir);
    for (_, package) in BUILTINS {
        cmd.args(["-p", package]);
    }
    // The outer build's flags and wrappers are for the host target, not for wasm.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_PROFILE_RELEASE_PANIC",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .expect("running cargo to build the built-in adapters");
    if !status.success() {
        panic!(
            "building the built-in adapters for wasm32-wasip2 failed. \
             Is the target installed? Run: rustup target add wasm32-wasip2"
        );
    }

    let out_dir = wasm_dir(&target_dir);
    let mut table = String::from("&[\n");
    for (name, package) in BUILTINS {
        let file = out_dir.join(format!("{}.wasm", package.replace('-', "_")));
        assert!(file.exists(), "missing built adapter {}", file.display());
        table.push_str(&format!(
            "    ({name:?}, include_bytes!({:?}).as_slice()),\n",
            file.display().to_string()
        ));
    }
    table.push(']');
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("builtin_adapters.rs");
    std::fs::write(out, table).unwrap();
}

/// Where nested adapter builds go: shared by every host profile, so debug, release and
/// clippy builds of chatd do not each rebuild the adapters.
fn adapter_target_dir(workspace: &Path) -> PathBuf {
    if let Ok(dir) = std::env::var("CHATD_ADAPTER_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace.join("target"));
    target.join("adapters")
}

fn wasm_dir(target_dir: &Path) -> PathBuf {
    target_dir.join("wasm32-wasip2").join("adapter")
}
