#!/usr/bin/env bash
# Agent end-to-end test: the real Claude Code and Codex CLIs, unmodified, driven through chatd.
#
# Claude Code speaks the Anthropic Messages API to chatd, Codex the OpenAI Responses API;
# chatd translates both to its providers. A mock upstream (mock_upstream.py, beside this
# script) plays the model in the providers' own dialects — Ollama NDJSON for an `ollama`-
# adapter provider, OpenAI Chat Completions SSE for an `openai_compat` one — and scripts one
# turn: a call of the agent's shell tool writing a marker into out.txt, then, once the tool
# result comes back, a final text. Each agent runs once through each provider (4 runs); a run
# passes when the agent exited 0, out.txt holds the marker (the tool really ran), the agent's
# final answer is the mock's text, and the upstream saw exactly two requests (a third or
# fourth means the agent could not use chatd's stream and fell back or retried).
#
# How to run, from the repository root:
#   cargo build -p chatd                                  # or CHATD_BIN=/path/to/chatd
#   tests/agents/run.sh --install "$HOME/.cache/chatd-agents"
# --install DIR installs the two agents there with npm (about 25 s) unless they already are;
# without it, `claude` and `codex` must be on PATH (or set CLAUDE_BIN / CODEX_BIN).
#
# Needs: bash, python3 (standard library only), curl, node + npm (Node 20 works, though
# Claude Code declares >= 22) for the install, and network access to the npm registry for it.
# Tested with @anthropic-ai/claude-code 2.1.332 and @openai/codex 0.171.0.
#
# Options: --install DIR   install/find the agents under DIR
#          --only claude|codex
#          --keep          keep the work directory (logs, agent output) even when all passed
# Work files go under target/agents/ (Codex refuses a home under the system temp dir).
# Prints one line per run, then "N passed, M failed"; exits 1 if any run failed.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CLAUDE_VERSION="2.1.332"
CODEX_VERSION="0.171.0"
PROMPT="Run the shell command: echo chatd-agent-e2e > out.txt   Then tell me you are done."
MARKER="chatd-agent-e2e"
FINAL="AGENT-DONE: out.txt now holds chatd-agent-e2e."

INSTALL_DIR=""
ONLY=""
KEEP=0
while [ $# -gt 0 ]; do
    case "$1" in
        --install) INSTALL_DIR="$2"; shift 2 ;;
        --only) ONLY="$2"; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
        *) echo "unknown option: $1" >&2; exit 2 ;;
    esac
done

# --- the agents --------------------------------------------------------------------------------
if [ -n "$INSTALL_DIR" ]; then
    mkdir -p "$INSTALL_DIR"
    if [ ! -x "$INSTALL_DIR/node_modules/.bin/claude" ] || [ ! -x "$INSTALL_DIR/node_modules/.bin/codex" ]; then
        echo "== installing @anthropic-ai/claude-code@$CLAUDE_VERSION and @openai/codex@$CODEX_VERSION into $INSTALL_DIR"
        start=$(date +%s)
        npm install --prefix "$INSTALL_DIR" --no-audit --no-fund --loglevel=error \
            "@anthropic-ai/claude-code@$CLAUDE_VERSION" "@openai/codex@$CODEX_VERSION"
        echo "   took $(( $(date +%s) - start )) s"
    fi
    export PATH="$INSTALL_DIR/node_modules/.bin:$PATH"
fi
CLAUDE_BIN="${CLAUDE_BIN:-$(command -v claude || true)}"
CODEX_BIN="${CODEX_BIN:-$(command -v codex || true)}"
CHATD_BIN="${CHATD_BIN:-$REPO/target/debug/chatd}"
[ -x "$CHATD_BIN" ] || { echo "no chatd binary at $CHATD_BIN (cargo build -p chatd, or set CHATD_BIN)" >&2; exit 2; }
AGENTS=()
for agent in claude codex; do
    [ -z "$ONLY" ] || [ "$ONLY" = "$agent" ] || continue
    if [ "$agent" = claude ]; then bin="$CLAUDE_BIN"; else bin="$CODEX_BIN"; fi
    [ -n "$bin" ] && [ -x "$bin" ] || { echo "$agent not found: put it on PATH, set ${agent^^}_BIN, or pass --install DIR" >&2; exit 2; }
    echo "== $agent: $("$bin" --version 2>&1 | head -n 1)"
    AGENTS+=("$agent")
done

# --- the work directory, the mock and chatd ----------------------------------------------------
mkdir -p "$REPO/target/agents"
WORK="$(mktemp -d "$REPO/target/agents/run.XXXXXX")"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

# Loopback only: nothing between chatd, the mock and the agents.
unset http_proxy https_proxy all_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost

python3 "$HERE/mock_upstream.py" --log "$WORK/upstream.jsonl" > "$WORK/mock.port" 2> "$WORK/mock.stderr" &
PIDS+=($!)
for _ in $(seq 100); do [ -s "$WORK/mock.port" ] && break; sleep 0.1; done
MOCK_PORT="$(head -n 1 "$WORK/mock.port")"
[ -n "$MOCK_PORT" ] || { echo "the mock upstream did not start:" >&2; cat "$WORK/mock.stderr" >&2; exit 1; }

cat > "$WORK/lakehouse.toml" <<EOF
[chatd]
default_provider = "ollama"
timeout_secs = 60
adapters_dir = ""

[chatd.providers.ollama]
adapter = "ollama"
base_url = "http://127.0.0.1:$MOCK_PORT"

[chatd.providers.openrouter]
adapter = "openai_compat"
base_url = "http://127.0.0.1:$MOCK_PORT/v1"
key_env = "CHATD_AGENTS_UPSTREAM_KEY"
EOF

CHATD_PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
CHATD_URL="http://127.0.0.1:$CHATD_PORT"
CHATD_AGENTS_UPSTREAM_KEY=agents-upstream-key RUST_LOG="${RUST_LOG:-info}" \
    "$CHATD_BIN" serve --config "$WORK/lakehouse.toml" --bind "127.0.0.1:$CHATD_PORT" > "$WORK/chatd.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1200); do
    curl -fsS "$CHATD_URL/healthz" > /dev/null 2>&1 && break
    kill -0 "${PIDS[-1]}" 2>/dev/null || { echo "chatd exited:" >&2; cat "$WORK/chatd.log" >&2; exit 1; }
    sleep 0.1
done
curl -fsS "$CHATD_URL/healthz" > /dev/null || { echo "chatd did not become healthy:" >&2; tail -n 50 "$WORK/chatd.log" >&2; exit 1; }
echo "== chatd $CHATD_URL, mock upstream port $MOCK_PORT, work dir $WORK"

# --- one run -------------------------------------------------------------------------------------
# Each run gets its own home and directory; the model name routes to one provider and names
# an upstream model no other run uses, so the upstream log tells the runs apart.

run_claude() {  # DIR MODEL
    local dir="$1" model="$2"
    # CLAUDE_CODE_MAX_RETRIES: a failing chatd would otherwise be retried for minutes.
    # Claude Code works in its current directory.
    cd "$dir/work"
    env -i PATH="$PATH" HOME="$dir/home" NO_PROXY="$NO_PROXY" no_proxy="$no_proxy" \
        ANTHROPIC_BASE_URL="$CHATD_URL" ANTHROPIC_API_KEY=unused-by-chatd \
        ANTHROPIC_MODEL="$model" ANTHROPIC_SMALL_FAST_MODEL="$model" ANTHROPIC_DEFAULT_HAIKU_MODEL="$model" \
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 DISABLE_TELEMETRY=1 DISABLE_AUTOUPDATER=1 \
        CLAUDE_CODE_MAX_RETRIES=1 \
        timeout 180 "$CLAUDE_BIN" -p "$PROMPT" --output-format stream-json --verbose --allowedTools Bash \
        < /dev/null > "$dir/agent.jsonl" 2> "$dir/agent.stderr"
    local status=$?
    cd "$REPO"
    return $status
}

run_codex() {  # DIR MODEL
    local dir="$1" model="$2"
    mkdir -p "$dir/codex-home"
    cat > "$dir/codex-home/config.toml" <<EOF
model = "$model"
model_provider = "chatd"
approval_policy = "never"
sandbox_mode = "danger-full-access"
check_for_update_on_startup = false

[model_providers.chatd]
name = "chatd"
base_url = "$CHATD_URL/v1"
env_key = "CHATD_API_KEY"
wire_api = "responses"
# A failing chatd would otherwise be retried 5 times per request and per stream.
request_max_retries = 1
stream_max_retries = 1

[analytics]
enabled = false

[features]
plugins = false
EOF
    env -i PATH="$PATH" HOME="$dir/home" CODEX_HOME="$dir/codex-home" CHATD_API_KEY=unused-by-chatd \
        NO_PROXY="$NO_PROXY" no_proxy="$no_proxy" \
        timeout 180 "$CODEX_BIN" exec --json --skip-git-repo-check --ephemeral \
        --dangerously-bypass-approvals-and-sandbox -C "$dir/work" "$PROMPT" \
        < /dev/null > "$dir/agent.jsonl" 2> "$dir/agent.stderr"
}

# Prints why the run failed, or nothing when it passed.
check_run() {  # AGENT DIR STATUS UPSTREAM_MODEL UPSTREAM_PATH
    python3 - "$@" "$WORK/upstream.jsonl" "$MARKER" "$FINAL" <<'PY'
import json, pathlib, sys
agent, d, status, up_model, up_path, log, marker, final = sys.argv[1:]
d = pathlib.Path(d)
why = []
if status != "0":
    why.append(f"{agent} exited {status}" + (" (timed out)" if status == "124" else ""))
out = d / "work" / "out.txt"
if not out.exists():
    why.append("out.txt was not created: the shell tool did not run")
elif out.read_text().strip() != marker:
    why.append(f"out.txt holds {out.read_text()!r}, not the marker")
events = []
for line in (d / "agent.jsonl").read_text(errors="replace").splitlines():
    try:
        events.append(json.loads(line))
    except ValueError:
        pass
if agent == "claude":
    results = [e for e in events if e.get("type") == "result"]
    if not results:
        why.append("no result line in Claude Code's output")
    else:
        r = results[-1]
        if r.get("is_error"):
            why.append(f"Claude Code reports an error: {str(r.get('result'))[:300]}")
        elif (r.get("result") or "").strip() != final:
            why.append(f"final answer {str(r.get('result'))[:200]!r}, expected the mock's text")
else:
    texts = [e["item"].get("text", "") for e in events
             if e.get("type") == "item.completed" and (e.get("item") or {}).get("type") == "agent_message"]
    failed = [e for e in events if e.get("type") == "turn.failed"]
    if failed:
        why.append(f"Codex turn failed: {str(failed[-1].get('error'))[:300]}")
    if not any(t.strip() == final for t in texts):
        why.append(f"no agent_message with the mock's final text (got {texts!r:.200})")
    if not any(e.get("type") == "turn.completed" for e in events):
        why.append("no turn.completed")
requests = []
for line in pathlib.Path(log).read_text().splitlines():
    rec = json.loads(line)
    if isinstance(rec.get("body"), dict) and rec["body"].get("model") == up_model:
        requests.append(rec)
paths = sorted({r["path"] for r in requests})
if paths and paths != [up_path]:
    why.append(f"upstream paths {paths}, expected {up_path}")
if len(requests) != 2:
    why.append(f"the upstream saw {len(requests)} requests for {up_model}, expected 2 (tool call, then answer)")
elif not any(m.get("role") == "tool" for m in requests[1]["body"].get("messages") or []):
    why.append("the second upstream request carries no tool result")
print("; ".join(why))
PY
}

PASSED=0
FAILED=0
for agent in "${AGENTS[@]}"; do
    for provider in ollama openrouter; do
        if [ "$provider" = ollama ]; then
            up_model="agent-$agent"; model="ollama/$up_model"; up_path="/api/chat"
        else
            up_model="acme/agent-$agent"; model="openrouter/$up_model"; up_path="/v1/chat/completions"
        fi
        dir="$WORK/$agent-$provider"
        mkdir -p "$dir/work" "$dir/home"
        start=$(date +%s)
        status=0
        "run_$agent" "$dir" "$model" || status=$?
        why="$(check_run "$agent" "$dir" "$status" "$up_model" "$up_path")"
        took=$(( $(date +%s) - start ))
        if [ -z "$why" ]; then
            PASSED=$((PASSED + 1))
            echo "PASS $agent via $provider ($model, ${took}s)"
        else
            FAILED=$((FAILED + 1))
            echo "FAIL $agent via $provider ($model, ${took}s): $why"
            echo "     agent output: $dir/agent.jsonl, $dir/agent.stderr; chatd log: $WORK/chatd.log; upstream: $WORK/upstream.jsonl"
        fi
    done
done

if [ "$FAILED" -gt 0 ]; then
    echo "--- chatd log (last 30 lines)"
    tail -n 30 "$WORK/chatd.log"
elif [ "$KEEP" -eq 0 ]; then
    rm -rf "$WORK"
fi
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
