//! The real coding agents, unmodified, through the real binary: Claude Code over the Anthropic
//! Messages API and Codex over the OpenAI Responses API, each through an `ollama`-adapter and
//! an `openai_compat` provider, each running a shell tool the mock upstream scripts and then
//! answering (tests/agents/run.sh says what each run checks).
//!
//! The agents come from npm: `.ci/run` installs them and sets `CHATD_AGENTS_DIR`; locally,
//! `tests/agents/run.sh --install DIR` does, and `CHATD_AGENTS_DIR=DIR cargo test --test
//! agents` runs this. Without the variable the test says so and passes: it cannot run
//! offline without the agents, and CI always has them.

use std::process::Command;

#[test]
fn claude_code_and_codex_run_a_tool_and_answer_through_chatd() {
    let Some(dir) = std::env::var_os("CHATD_AGENTS_DIR") else {
        eprintln!("CHATD_AGENTS_DIR is not set: the agents are not installed, skipping");
        return;
    };
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/agents/run.sh");
    let output = Command::new("bash")
        .arg(&script)
        .arg("--install")
        .arg(&dir)
        .env("CHATD_BIN", env!("CARGO_BIN_EXE_chatd"))
        .output()
        .expect("running tests/agents/run.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("4 passed, 0 failed"),
        "agent runs failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
}
