#!/usr/bin/env python3
"""chatd benchmark harness: the same closed-loop load against a mock upstream directly,
against chatd through each adapter, and against the installed peers (LiteLLM proxy,
Portkey gateway, nginx), all on loopback. Prints one markdown table per section and
writes them to bench/results/latest.md (raw per-round numbers to latest.json).

    python3 bench/run.py                 # full comparison, defaults
    python3 bench/run.py --soak 300      # chatd RSS under c=64 load for 300 s

See bench/README.md for what is measured and how to read the tables. Stdlib only.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
PEERS = BENCH / ".peers"
RESULTS = BENCH / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")

PROMPT = "Say hello."
MESSAGES = [{"role": "user", "content": PROMPT}]
MOCK_FLAGS = ["--workers", "1", "--chunks", "8", "--chunk-delay-ms", "2"]
DUMMY_KEY = "sk-bench-dummy"
# The reference row of the formats section: every other format is compared with it.
OPENAI_FORMAT = "chatd OpenAI /v1/chat/completions"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- /proc accounting


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, utime+stime ticks) for every live process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # fields from #3 (state) on
        table[int(entry)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    return table


def process_tree(pid: int, table: dict | None = None) -> list[int]:
    """pid and all its live descendants."""
    table = table if table is not None else _proc_table()
    children: dict[int, list[int]] = {}
    for p, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(p)
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        if p in table:
            tree.append(p)
            todo.extend(children.get(p, []))
    return tree


def tree_cpu_seconds(pid: int) -> float:
    table = _proc_table()
    return sum(table[p][1] for p in process_tree(pid, table)) / CLK_TCK


def tree_status_kib(pid: int, key: str) -> int:
    """Sum of a /proc/<pid>/status field (VmHWM, VmRSS) over the process tree, in KiB."""
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


# ---------------------------------------------------------------- processes


class Procs:
    """Every process the harness starts; stop_all() ends them (and their children) by pid."""

    def __init__(self) -> None:
        self.started: list[tuple[str, subprocess.Popen]] = []

    def start(self, name, argv, log_path=None, env=None, cwd=None, stdout=None):
        out = open(log_path, "ab") if log_path else subprocess.DEVNULL
        proc = subprocess.Popen(
            [str(a) for a in argv],
            stdout=stdout or out,
            stderr=out if log_path else subprocess.DEVNULL,
            env={k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None},
            cwd=cwd,
            start_new_session=True,  # a terminal Ctrl-C reaches only us; we stop them in order
        )
        if log_path:
            out.close()  # the child has its own descriptor
        self.started.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen, grace: float = 10.0) -> None:
        if proc.poll() is not None:
            return
        tree = process_tree(proc.pid)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for pid in tree[1:]:  # descendants that outlived their parent (workers, trackers)
            if os.path.exists(f"/proc/{pid}"):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def stop_all(self) -> None:
        for _, proc in reversed(self.started):
            self.stop(proc)
        self.started.clear()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:] if line.strip())[-600:]


def http(url, body=None, headers=None, timeout=30.0) -> tuple[int, bytes]:
    """One request; (status, body). HTTP error statuses are returned, not raised."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers or {})
    if data is not None:
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_ready(name, proc, url, timeout, log_path, ok=lambda status: True) -> None:
    """Poll url until it answers (and ok(status)); raise with the log's tail on failure."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}: {tail(log_path)}")
        try:
            status, _ = http(url, timeout=2)
            if ok(status):
                return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{name} not ready after {timeout:.0f} s: {tail(log_path)}")


# ---------------------------------------------------------------- targets


@dataclass
class Target:
    name: str
    endpoint: str  # the upstream endpoint it ends up calling: the key of its direct baseline
    url: str
    body: dict
    headers: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None  # the gateway (None for direct-to-mock)
    direct: bool = False


def openai_body(model: str) -> dict:
    return {"model": model, "messages": MESSAGES}


class Bench:
    def __init__(self, args):
        self.args = args
        self.procs = Procs()
        self.tmp = Path(tempfile.mkdtemp(prefix="chatd-bench-"))
        target_dir = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
        self.bin = (target_dir if target_dir.is_absolute() else REPO / target_dir) / "release"
        self.notes: list[str] = []
        self.versions: dict[str, str] = {}
        self.mock_port = 0
        self.formats: list[Target] = []

    # -- build and start

    def build(self) -> None:
        cmd = ["cargo", "build", "--release", "-p", "chatd", "-p", "chatd-bench-mock-upstream",
               "-p", "chatd-bench-loadgen", "-p", "chatd-bench-passthrough"]
        log("$ " + " ".join(cmd))
        started = time.monotonic()
        subprocess.run(cmd, cwd=REPO, check=True)
        log(f"build done in {time.monotonic() - started:.0f} s")

    def start_mock(self) -> None:
        port = free_port()
        log_path = self.tmp / "mock.log"
        proc = self.procs.start("mock", [self.bin / "mock-upstream", "--bind", f"127.0.0.1:{port}",
                                         *MOCK_FLAGS], log_path)
        deadline = time.monotonic() + 15
        while "listening on" not in (log_path.read_text() if log_path.exists() else ""):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mock-upstream did not start: {tail(log_path)}")
            time.sleep(0.05)
        self.mock_port = port

    def start_chatd(self, label: str, rust_log: str | None, binary: Path | None = None,
                    fallbacks: bool = True, traces: bool = False) -> tuple[str, subprocess.Popen]:
        port, mock = free_port(), f"http://127.0.0.1:{self.mock_port}"
        config = self.tmp / f"chatd-{label}.toml"
        # Two chains whose first candidate is down (nothing listens on its port): one with the
        # default health settings (ejected after 3 failures, then a probe every 10 s), one
        # that never ejects nor retries, so every request first meets the refused connection.
        down = f"http://127.0.0.1:{free_port()}"
        chains = f"""[models]
fallback = ["down/m", "openrouter/mock/m"]
fallback_every_time = ["down_every_time/m", "openrouter/mock/m"]

[chatd.providers.down]
adapter = "ollama"
base_url = "{down}"

[chatd.providers.down_every_time]
adapter = "ollama"
base_url = "{down}"
retries = 0
eject_after_failures = 0
""" if fallbacks else ""
        # Traces exported to the mock, which answers 404: the whole export is done all the same.
        otel = f"""[chatd.otel]
enabled = true
endpoint = "{mock}/v1/traces"
""" if traces else ""
        config.write_text(f"""{otel}[chatd]
bind = "127.0.0.1:{port}"
default_provider = "ollama"

[chatd.providers.ollama]
adapter = "ollama"
base_url = "{mock}"

[chatd.providers.ollama_cloud]
adapter = "ollama_cloud"
base_url = "{mock}"
key_env = "CHATD_BENCH_KEY"

[chatd.providers.openrouter]
adapter = "openai_compat"
base_url = "{mock}/v1"
key_env = "CHATD_BENCH_KEY"

{chains}""")
        # rust_log None unsets RUST_LOG: chatd's default (info, a line per request) is what users run.
        env = {"CHATD_BENCH_KEY": DUMMY_KEY, "RUST_LOG": rust_log}
        log_path = self.tmp / f"chatd-{label}.log"
        proc = self.procs.start(f"chatd-{label}", [binary or self.bin / "chatd", "serve", "--config", config,
                                                    "--bind", f"127.0.0.1:{port}"], log_path, env)
        wait_ready("chatd", proc, f"http://127.0.0.1:{port}/healthz", 60, log_path,
                   ok=lambda s: s == 200)
        return f"http://127.0.0.1:{port}", proc

    def start_passthrough(self) -> tuple[str, subprocess.Popen]:
        """The floor of chatd's own stack: axum + hyper-client forwarding, nothing else."""
        port = free_port()
        log_path = self.tmp / "passthrough.log"
        proc = self.procs.start("passthrough", [self.bin / "passthrough", "--bind", f"127.0.0.1:{port}",
                                                "--upstream", f"http://127.0.0.1:{self.mock_port}"],
                                log_path)
        deadline = time.monotonic() + 15
        while "listening on" not in (log_path.read_text() if log_path.exists() else ""):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"passthrough did not start: {tail(log_path)}")
            time.sleep(0.05)
        return f"http://127.0.0.1:{port}", proc

    def start_nginx(self, exe: str) -> tuple[str, subprocess.Popen]:
        port, t = free_port(), self.tmp
        conf = t / "nginx.conf"
        conf.write_text(f"""worker_processes auto;
pid {t}/nginx.pid;
error_log {t}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log {t}/nginx-access.log;
    client_body_temp_path {t}/nginx-body;
    proxy_temp_path {t}/nginx-proxy;
    keepalive_requests 1000000;
    upstream mock {{
        server 127.0.0.1:{self.mock_port};
        keepalive 128;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
""")
        log_path = t / "nginx-stderr.log"
        proc = self.procs.start("nginx", [exe, "-p", t, "-c", conf, "-e", t / "nginx-error.log",
                                          "-g", "daemon off;"], log_path)
        wait_ready("nginx", proc, f"http://127.0.0.1:{port}/", 15, t / "nginx-error.log")
        return f"http://127.0.0.1:{port}", proc

    def start_litellm(self, exe: Path, key: str) -> tuple[str, subprocess.Popen]:
        port = free_port()
        config = self.tmp / "litellm.yaml"
        config.write_text(f"""model_list:
  - model_name: mock
    litellm_params:
      model: openai/m
      api_base: http://127.0.0.1:{self.mock_port}/v1
      api_key: {DUMMY_KEY}
general_settings:
  master_key: {key}
""")
        log_path = self.tmp / "litellm.log"
        proc = self.procs.start("litellm", [exe, "--config", config, "--host", "127.0.0.1",
                                            "--port", port, "--num_workers", "2",
                                            "--timeout_worker_healthcheck", "60"],
                                log_path, {"LITELLM_LOCAL_MODEL_COST_MAP": "True"})
        return f"http://127.0.0.1:{port}", proc

    def start_portkey(self, pkg: Path) -> tuple[str, subprocess.Popen]:
        port = free_port()
        log_path = self.tmp / "portkey.log"
        proc = self.procs.start("portkey", ["node", "build/start-server.js", f"--port={port}",
                                            "--headless"], log_path, {"NODE_ENV": "production"},
                                cwd=pkg)
        wait_ready("Portkey", proc, f"http://127.0.0.1:{port}/", 60, log_path)
        return f"http://127.0.0.1:{port}", proc

    def peer(self, name, start, *start_args):
        """Starts a peer; a failure is a note, not fatal."""
        try:
            return start(*start_args)
        except Exception as e:  # noqa: BLE001 - any failure to start skips the peer
            self.notes.append(f"{name}: failed to start, skipped ({e})")
            log(f"!! {self.notes[-1]}")
            return None

    def detect_and_start(self, with_peers: bool) -> list[Target]:
        """Starts mock, chatd (info and warn) and every detected peer; returns the targets."""
        self.start_mock()
        mock = f"http://127.0.0.1:{self.mock_port}"
        chatd, chatd_proc = self.start_chatd("info", None)
        chatd_warn, chatd_warn_proc = self.start_chatd("warn", "warn")
        chatd_traced, chatd_traced_proc = self.start_chatd("traced", None, traces=True)
        oa = "/v1/chat/completions"
        baseline, baseline_url = [], ""
        if self.args.chatd_baseline:
            # Another chatd build (say, main's) under the same load in the same rounds: the
            # A/B of a change. Its config has no chains: an older build may not know them.
            baseline_url, proc = self.start_chatd("baseline", None, self.args.chatd_baseline,
                                                  fallbacks=False)
            baseline.append(Target("chatd openai_compat (baseline build)", oa, baseline_url + oa,
                                   openai_body("openrouter/mock/m"), proc=proc))
        targets = [
            Target("mock direct", oa, mock + oa, openai_body("m"), direct=True),
            Target("mock direct", "/api/chat", mock + "/api/chat",
                   {"model": "m", "messages": MESSAGES}, direct=True),
            Target("mock direct", "/api/generate", mock + "/api/generate",
                   {"model": "m", "prompt": f"User: {PROMPT}"}, direct=True),
            Target("chatd openai_compat", oa, chatd + oa, openai_body("openrouter/mock/m"),
                   proc=chatd_proc),
            Target("chatd ollama", "/api/chat", chatd + oa, openai_body("ollama/m"),
                   proc=chatd_proc),
            Target("chatd ollama_cloud", "/api/generate", chatd + oa,
                   openai_body("ollama_cloud/m"), proc=chatd_proc),
            Target("chatd openai_compat (RUST_LOG=warn)", oa, chatd_warn + oa,
                   openai_body("openrouter/mock/m"), proc=chatd_warn_proc),
            Target("chatd openai_compat (traces exported)", oa, chatd_traced + oa,
                   openai_body("openrouter/mock/m"), proc=chatd_traced_proc),
            *baseline,
            Target("chatd fallback, first candidate down (ejected)", oa, chatd + oa,
                   openai_body("fallback"), proc=chatd_proc),
            Target("chatd fallback, first candidate down (refused every time)", oa, chatd + oa,
                   openai_body("fallback_every_time"), proc=chatd_proc),
        ]
        if self.args.chatd_baseline:
            # The native format through both builds too (the baseline's openai_compat is above).
            targets += [
                Target("chatd native /v1/chat", oa, chatd + "/v1/chat",
                       openai_body("openrouter/mock/m"), proc=chatd_proc),
                Target("chatd native /v1/chat (baseline build)", oa, baseline_url + "/v1/chat",
                       openai_body("openrouter/mock/m"), proc=baseline[0].proc),
            ]
        if "formats" in self.args.sections:
            self.formats = self.format_targets(mock, chatd, chatd_proc)
        if self.args.targets:
            wanted = [w for w in self.args.targets.split(",") if w]
            targets = [t for t in targets if t.direct or any(w in t.name for w in wanted)]
        passthrough = self.peer("axum+hyper passthrough", self.start_passthrough)
        if passthrough:
            targets.append(Target("axum+hyper passthrough (no chatd)", oa, passthrough[0] + oa,
                                  openai_body("m"), proc=passthrough[1]))
        if not with_peers:
            return targets
        wanted = set(self.args.peers.split(",")) if self.args.peers else set()

        nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
        litellm = PEERS / "litellm-venv" / "bin" / "litellm"
        portkey = PEERS / "node_modules" / "@portkey-ai" / "gateway"
        found = {
            "nginx": nginx is not None,
            "litellm": litellm.exists(),
            "portkey": (portkey / "build" / "start-server.js").exists() and shutil.which("node"),
        }
        for name, ok in found.items():
            if name in wanted and not ok:
                self.notes.append(f"{name}: not installed, skipped (bash bench/setup-peers.sh)")
        # LiteLLM takes 20-40 s to start: launch it first, wait for it last.
        litellm_key = "sk-bench-" + secrets.token_hex(16)
        started_litellm = None
        if "litellm" in wanted and found["litellm"]:
            started_litellm = self.peer("LiteLLM", self.start_litellm, litellm, litellm_key)
        if "nginx" in wanted and found["nginx"]:
            started = self.peer("nginx", self.start_nginx, nginx)
            if started:
                targets.append(Target("nginx proxy_pass", oa, started[0] + oa, openai_body("m"),
                                      proc=started[1]))
        if "portkey" in wanted and found["portkey"]:
            started = self.peer("Portkey", self.start_portkey, portkey)
            if started:
                headers = ["x-portkey-provider: openai",
                           f"x-portkey-custom-host: {mock}/v1",
                           f"Authorization: Bearer {DUMMY_KEY}"]
                targets.append(Target("Portkey gateway", oa, started[0] + oa, openai_body("m"),
                                      headers, proc=started[1]))
        if started_litellm:
            url, proc = started_litellm
            try:
                wait_ready("LiteLLM", proc, url + "/health/liveliness", 240,
                           self.tmp / "litellm.log", ok=lambda s: s == 200)
                targets.append(Target("LiteLLM proxy", oa, url + oa, openai_body("mock"),
                                      [f"Authorization: Bearer {litellm_key}"], proc=proc))
            except RuntimeError as e:
                self.notes.append(f"LiteLLM: failed to start, skipped ({e})")
                self.procs.stop(proc)
        return targets

    def format_targets(self, mock: str, chatd: str, proc: subprocess.Popen) -> list[Target]:
        """Every client format through chatd's ollama provider (so every one ends on the
        mock's /api/chat), and that endpoint direct."""
        chat = {"model": "ollama/m", "messages": MESSAGES}
        return [
            Target("mock direct", "/api/chat", mock + "/api/chat",
                   {"model": "m", "messages": MESSAGES}, direct=True),
            Target(OPENAI_FORMAT, "/api/chat", chatd + "/v1/chat/completions", chat, proc=proc),
            Target("chatd native /v1/chat", "/api/chat", chatd + "/v1/chat", chat, proc=proc),
            Target("chatd Anthropic /v1/messages", "/api/chat", chatd + "/v1/messages",
                   {**chat, "max_tokens": 256}, proc=proc),
            Target("chatd Responses /v1/responses", "/api/chat", chatd + "/v1/responses",
                   {"model": "ollama/m", "input": PROMPT}, proc=proc),
            Target("chatd Ollama /api/chat", "/api/chat", chatd + "/api/chat", chat, proc=proc),
            Target("chatd Ollama /api/generate", "/api/chat", chatd + "/api/generate",
                   {"model": "ollama/m", "prompt": PROMPT}, proc=proc),
        ]

    # -- measuring

    def probe(self, t: Target, stream: bool) -> str | None:
        """One request before the rounds; returns why the target is unusable, or None."""
        headers = dict(h.split(": ", 1) for h in t.headers)
        try:
            status, body = http(t.url, {**t.body, "stream": stream}, headers, timeout=60)
        except (OSError, urllib.error.URLError) as e:
            return f"probe failed: {e}"
        text = body.decode(errors="replace")
        if not 200 <= status < 300:
            return f"probe answered {status}: {text.strip()[:160]}"
        if stream and "tok0" not in text:
            return f"probe stream had no content: {text.strip()[:160]}"
        return None

    def measure(self, t: Target, concurrency: int, stream: bool) -> dict:
        """One loadgen run; the gateway's CPU is sampled over the measured window."""
        duration, warmup = self.args.duration, self.args.warmup
        cmd = [self.bin / "loadgen", "--url", t.url, "--body", json.dumps({**t.body, "stream": stream}),
               "-c", concurrency, "-d", duration, "--warmup", warmup, "--json"]
        for h in t.headers:
            cmd += ["--header", h]
        if stream:
            cmd.append("--stream")
        proc = self.procs.start("loadgen", cmd, stdout=subprocess.PIPE)
        time.sleep(warmup)
        cpu0 = tree_cpu_seconds(t.proc.pid) if t.proc else None
        try:
            out, _ = proc.communicate(timeout=duration + warmup + 120)
        except subprocess.TimeoutExpired:
            self.procs.stop(proc)
            out = b""
        cpu1 = tree_cpu_seconds(t.proc.pid) if t.proc else None
        self.procs.started.remove(("loadgen", proc))
        try:
            r = json.loads(out)
        except json.JSONDecodeError:
            return {"ok": 0, "errors": 1, "first_error": f"loadgen exited {proc.returncode}"}
        ok = r["requests_ok"]
        res = {
            "ok": ok,
            "errors": r["non_2xx"] + r["connection_errors"] + r["timeouts"],
            "first_error": r["first_error"],
            "rps": r["req_per_sec"],
            "p50": r["latency_ms"]["p50"],
            "p99": r["latency_ms"]["p99"],
        }
        if stream:
            s = r["stream"]
            res |= {"ttft50": s["ttft_ms"]["p50"], "ttft99": s["ttft_ms"]["p99"],
                    "gap50": s["inter_chunk_ms"]["p50"], "gap99": s["inter_chunk_ms"]["p99"]}
        if t.proc and ok:
            res["cpu_per_1k"] = (cpu1 - cpu0) / ok * 1000
            res["hwm_mib"] = tree_status_kib(t.proc.pid, "VmHWM") / 1024
        return res

    def section(self, targets: list[Target], stream: bool) -> dict:
        """Interleaved rounds: for each concurrency, R rounds of every target in turn."""
        label = "stream" if stream else "plain"
        live = []
        for t in targets:
            why = self.probe(t, stream)
            if why:
                note = f"{t.name} ({label}): skipped, {why}"
                self.notes.append(note)
                log(f"!! {note}")
            else:
                live.append(t)
        runs: dict = {}
        for c in self.args.concurrency:
            for rnd in range(self.args.rounds):
                for t in live:
                    res = self.measure(t, c, stream)
                    runs.setdefault(c, {}).setdefault(key(t), []).append(res)
                    log(f"[{label} c={c} round {rnd + 1}/{self.args.rounds}] {key(t)}: "
                        f"{res.get('rps', 0):.0f} req/s p50 {res.get('p50')} ms"
                        + (f" errors {res['errors']}" if res["errors"] else ""))
        return {"targets": live, "runs": runs}

    def soak(self, t: Target, seconds: int) -> dict:
        cmd = [self.bin / "loadgen", "--url", t.url, "--body", json.dumps({**t.body, "stream": False}),
               "-c", 64, "-d", seconds, "--warmup", 0, "--json"]
        proc = self.procs.start("loadgen", cmd, stdout=subprocess.PIPE)
        samples, started = [], time.monotonic()
        while proc.poll() is None:
            samples.append((round(time.monotonic() - started), tree_status_kib(t.proc.pid, "VmRSS") / 1024))
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        out = proc.stdout.read()
        self.procs.started.remove(("loadgen", proc))
        samples.append((round(time.monotonic() - started), tree_status_kib(t.proc.pid, "VmRSS") / 1024))
        r = json.loads(out) if out else {}
        return {"samples": samples, "loadgen": r,
                "hwm_mib": tree_status_kib(t.proc.pid, "VmHWM") / 1024}


def key(t: Target) -> str:
    return f"{t.name} {t.endpoint}" if t.direct else t.name


# ---------------------------------------------------------------- reporting


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ms(v, signed=False) -> str:
    if v is None:
        return "—"
    digits = 3 if abs(v) < 1 else 2 if abs(v) < 100 else 0
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def num(v, fmt) -> str:
    return "—" if v is None else format(v, fmt)


def table(section: dict, stream: bool, ref: str | None = None) -> str:
    """One markdown table: a row per (concurrency, target); overhead vs the direct baseline,
    and with `ref`, each metric's difference to that target's in the same round."""
    targets, runs = section["targets"], section["runs"]
    metrics = ["ttft50", "ttft99", "gap50", "gap99"] if stream else ["p50", "p99"]
    names = {"p50": "p50", "p99": "p99", "ttft50": "TTFT p50", "ttft99": "TTFT p99",
             "gap50": "gap p50", "gap99": "gap p99"}
    head = (["c", "target", "upstream endpoint", "req/s"] + [names[m] + " ms" for m in metrics]
            + ["+" + names[m] + " ms" for m in metrics]
            + ([names[m] + " − ref ms" for m in metrics] if ref else [])
            + ["req/s ÷ direct", "peak RSS MiB", "CPU s / 1k req", "errors"])
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c, by_target in runs.items():
        baselines = {t.endpoint: by_target.get(key(t)) for t in targets if t.direct}
        for t in targets:
            rounds = by_target.get(key(t), [])
            base = baselines.get(t.endpoint) or []
            pairs = list(zip(rounds, base)) if not t.direct else []

            def delta(m):
                return med([r[m] - b[m] for r, b in pairs
                            if r.get(m) is not None and b.get(m) is not None])

            against = list(zip(rounds, by_target.get(ref, []))) if ref and not t.direct else []

            def vs_ref(m):
                return med([r[m] - b[m] for r, b in against
                            if r.get(m) is not None and b.get(m) is not None])

            ratio = med([r["rps"] / b["rps"] for r, b in pairs if r.get("rps") and b.get("rps")])
            hwm = [r["hwm_mib"] for r in rounds if "hwm_mib" in r]
            errors = sum(r["errors"] for r in rounds)
            first = next((r["first_error"] for r in rounds if r.get("first_error")), None)
            cells = ([str(c), t.name if not t.direct else "**mock direct**", f"`{t.endpoint}`",
                      num(med([r.get("rps") for r in rounds]), ".0f")]
                     + [ms(med([r.get(m) for r in rounds])) for m in metrics]
                     + [ms(delta(m), signed=True) if not t.direct else "—" for m in metrics]
                     + ([ms(vs_ref(m), signed=True) if against else "—" for m in metrics] if ref else [])
                     + [num(ratio, ".2f"), num(max(hwm) if hwm else None, ".0f"),
                        num(med([r.get("cpu_per_1k") for r in rounds]), ".3f"),
                        str(errors) + (f" ({first[:60]})" if errors and first else "")])
            rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def soak_table(res: dict) -> str:
    rss = [mib for _, mib in res["samples"]]
    r = res["loadgen"]
    lat = r.get("latency_ms", {})
    rows = ["| samples | first MiB | last MiB | min MiB | max MiB | peak (VmHWM) MiB | req/s | p50 ms | p99 ms | errors |",
            "|---|---|---|---|---|---|---|---|---|---|",
            f"| {len(rss)} | {rss[0]:.1f} | {rss[-1]:.1f} | {min(rss):.1f} | {max(rss):.1f} | "
            f"{res['hwm_mib']:.1f} | {num(r.get('req_per_sec'), '.0f')} | {ms(lat.get('p50'))} | "
            f"{ms(lat.get('p99'))} | "
            f"{r.get('non_2xx', 0) + r.get('connection_errors', 0) + r.get('timeouts', 0)} |"]
    series = ", ".join(f"{t}s {mib:.1f}" for t, mib in res["samples"])
    return "\n".join(rows) + f"\n\nRSS samples (every 5 s): {series}"


def cmd_output(argv, cwd=None) -> str:
    try:
        p = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=30)
        return (p.stdout or p.stderr).strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def binary_id(path: Path) -> str:
    """When the measured binary was built and the start of its SHA-256: the uncommitted
    state of a work tree is otherwise invisible in the results."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    built = datetime.datetime.fromtimestamp(path.stat().st_mtime, datetime.timezone.utc)
    return f"binary built {built:%Y-%m-%d %H:%M:%S} UTC, sha256 {digest}"


def machine_and_versions(load_at_start, chatd_bin: Path) -> list[str]:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor() or "?")
    rev = cmd_output(["git", "rev-parse", "--short", "HEAD"], REPO) or "?"
    # The results of an earlier run (a soak right after a full run) are not source changes.
    if cmd_output(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                   ":(exclude)bench/results"], REPO):
        rev += " (+ uncommitted changes)"
    versions = [f"chatd {rev}, {binary_id(chatd_bin)}", cmd_output(["rustc", "-V"])]
    litellm_py = PEERS / "litellm-venv" / "bin" / "python"
    if litellm_py.exists():
        versions.append("LiteLLM " + cmd_output([litellm_py, "-c",
                        "import importlib.metadata as m; print(m.version('litellm'))"]))
    pk = PEERS / "node_modules" / "@portkey-ai" / "gateway" / "package.json"
    if pk.exists():
        versions.append(f"Portkey gateway {json.loads(pk.read_text())['version']} "
                        f"(node {cmd_output(['node', '-v'])})")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if os.access(nginx, os.X_OK):
        versions.append(cmd_output([nginx, "-v"]).replace("nginx version: ", ""))
    return [
        f"- machine: {os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), {cpu}; "
        f"{platform.system()} {platform.release()}; load average at start "
        + " ".join(f"{x:.2f}" for x in load_at_start),
        "- versions: " + "; ".join(v for v in versions if v),
    ]


# ---------------------------------------------------------------- main


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=5, help="measured seconds per run (default 5)")
    p.add_argument("--warmup", type=float, default=1, help="warm-up seconds per run (default 1)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported (default 3)")
    p.add_argument("--concurrency", default="1,64", help="comma-separated concurrencies (default 1,64)")
    p.add_argument("--sections", default=None,
                   help="comma-separated: plain,stream,formats (default plain,stream; none with --soak)")
    p.add_argument("--peers", default="litellm,portkey,nginx",
                   help="peers to include when installed (default litellm,portkey,nginx; '' for none)")
    p.add_argument("--soak", type=int, metavar="SECONDS",
                   help="run chatd (openai_compat) under c=64 for SECONDS, sampling RSS every 5 s")
    p.add_argument("--no-build", action="store_true", help="use the existing release binaries")
    p.add_argument("--chatd-baseline", "--baseline-chatd", type=Path, metavar="BINARY",
                   help="also measure this chatd binary (e.g. a release build of main) in the same "
                        "rounds, as '... (baseline build)' targets: an A/B of a change")
    p.add_argument("--targets", default="",
                   help="comma-separated name fragments: only targets whose name contains one "
                        "(the direct baselines always run), e.g. 'openai_compat,fallback'")
    p.add_argument("--keep-logs", action="store_true",
                   help="keep the temp dir with the generated configs and every process's log")
    p.add_argument("--out", type=Path, help="markdown output (default bench/results/latest.md, "
                   "or soak-latest.md for a soak-only run)")
    args = p.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c]
    if args.sections is None:
        args.sections = "" if args.soak else "plain,stream"
    args.sections = [s for s in args.sections.split(",") if s]
    for s in args.sections:
        if s not in ("plain", "stream", "formats"):
            p.error(f"unknown section {s!r}")
    if not args.sections and not args.soak:
        p.error("nothing to run")
    args.out = args.out or RESULTS / ("latest.md" if args.sections else "soak-latest.md")
    return args


def _terminate(*_):
    raise KeyboardInterrupt  # SIGTERM unwinds like Ctrl-C, through the cleanup in main()


def main() -> int:
    args = parse_args()
    started = time.monotonic()
    load_at_start = os.getloadavg()
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    bench = Bench(args)
    now = datetime.datetime.now(datetime.timezone.utc)
    report = [f"# chatd benchmark, {now:%Y-%m-%d %H:%M} UTC", ""]
    raw: dict = {"args": vars(args)}

    def emit(lines: list[str]) -> None:
        report.extend(lines)
        print("\n".join(lines), flush=True)

    try:
        if not args.no_build:
            bench.build()
        targets = bench.detect_and_start(with_peers=bool(args.sections and args.peers))
        emit(report[:2] + machine_and_versions(load_at_start, bench.bin / "chatd") + [
            f"- settings: {args.duration:g} s measured after {args.warmup:g} s warm-up per run, "
            f"{args.rounds} interleaved rounds, medians of rounds; concurrency "
            f"{','.join(map(str, args.concurrency))}; mock-upstream {' '.join(MOCK_FLAGS)}; "
            "loadgen 1 thread, one keep-alive connection per concurrent worker"])
        del report[:2]
        sections = {"plain": ("Non-streaming chat completions", False),
                    "stream": ("Streaming chat completions (8 chunks, 2 ms apart)", True)}
        for name in args.sections:
            if name == "formats":
                title = "Streaming through every client format (ollama provider, 8 chunks, 2 ms apart)"
                log(f"== {title}")
                res = bench.section(bench.formats, True)
                raw[name] = res["runs"]
                emit(["", f"## {title}", "", table(res, True, ref=OPENAI_FORMAT)])
                continue
            title, stream = sections[name]
            log(f"== {title}")
            res = bench.section(targets, stream)
            raw[name] = res["runs"]
            emit(["", f"## {title}", "", table(res, stream)])
        if args.soak:
            t = next(t for t in targets if t.name == "chatd openai_compat")
            log(f"== soak: {args.soak} s at c=64 against {t.name}")
            raw["soak"] = res = bench.soak(t, args.soak)
            emit(["", f"## Soak: chatd openai_compat, c=64, {args.soak} s (RSS of chatd)", "",
                  soak_table(res)])
    except KeyboardInterrupt:
        log("interrupted: stopping everything that was started")
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the cleanup
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        bench.procs.stop_all()
        if args.keep_logs:
            log(f"configs and logs kept in {bench.tmp}")
        else:
            shutil.rmtree(bench.tmp, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if bench.notes:
        emit(["", "## Notes", ""] + [f"- {n}" for n in bench.notes])
    emit(["", f"Full run: {time.monotonic() - started:.0f} s (including build and start-up)."])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(report) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(raw, indent=1, default=str) + "\n")
    log(f"written: {args.out} and {args.out.with_suffix('.json').name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
