//! Runs the Python real-client suite (tests/python: the official OpenAI, Anthropic and Ollama
//! clients) against this build's `chatd` binary, so `cargo test --workspace` covers the
//! real-client tests too. The virtualenv `.venv` (with tests/python/requirements.txt) is
//! created on first run if missing, and topped up when a client it needs is not installed;
//! `.ci/run` prepares it.

mod support;

use std::path::Path;
use std::process::Command;

fn venv_python(root: &Path) -> std::path::PathBuf {
    let python = root.join(".venv/bin/python");
    if !python.exists() {
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(root.join(".venv"))
            .status()
            .expect("python3 is needed for the Python client tests");
        assert!(status.success(), "creating .venv failed");
    }
    let installed = Command::new(&python)
        // Every direct dependency: a venv made before one was added gets it installed.
        .args([
            "-c",
            "import openai, anthropic, ollama, pytest, prometheus_client",
        ])
        .status()
        .unwrap();
    if !installed.success() {
        let status = Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(root.join("tests/python/requirements.txt"))
            .status()
            .unwrap();
        assert!(
            status.success(),
            "installing tests/python/requirements.txt into .venv failed"
        );
    }
    python
}

#[test]
fn openai_python_sdk_against_the_real_binary() {
    let root = support::workspace();
    let python = venv_python(&root);
    let output = Command::new(python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(root.join("tests/python"))
        .env("CHATD_BIN", env!("CARGO_BIN_EXE_chatd"))
        .current_dir(root.join("tests/python"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "Python client suite failed:\n{stdout}\n{stderr}"
    );
    println!("{stdout}");
}
