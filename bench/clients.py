#!/usr/bin/env python3
"""What client keys and limits cost: a same-run A/B of chatd builds and settings on the
openai_compat path (non-streamed and streamed), interleaved round by round:

- `main`: a release build of the base branch (`--baseline PATH`), client keys off;
- `keys off`: this tree's release build, client keys off;
- `keys + limits (memory)`: client keys on, one key with all four limits set (high enough
  never to refuse), counters in-process;
- `keys + limits (redis)`: the same with counters in a local `redis-server` (started here
  on a free loopback port, without persistence), when it is installed.

    python3 bench/clients.py --baseline /path/to/main/chatd

Prints a markdown table (also written to bench/results/clients-latest.md). Stdlib only;
reuses run.py's process handling and measurement.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402

KEY = "chatd_" + "be" * 32
LIMITS = """requests_per_minute = 100000000
tokens_per_minute = 100000000000
tokens_per_day = 100000000000000
tokens_per_month = 100000000000000
"""


def config(port: int, mock: str, keys: bool, store: str | None) -> str:
    text = f"""[chatd]
bind = "127.0.0.1:{port}"
default_provider = "ollama"

[chatd.providers.ollama]
adapter = "ollama"
base_url = "{mock}"

[chatd.providers.openrouter]
adapter = "openai_compat"
base_url = "{mock}/v1"
key_env = "CHATD_BENCH_KEY"
"""
    if keys:
        digest = hashlib.sha256(KEY.encode()).hexdigest()
        text += f"""
[chatd.clients]
enabled = true

[chatd.clients.keys.bench]
sha256 = "{digest}"
models = ["openrouter/*", "ollama/*"]
{LIMITS}"""
    if store:
        text += f"""
[chatd.limits]
store = "{store}"
"""
    return text


class ClientsBench(run.Bench):
    def start_variant(self, label: str, binary: Path, keys: bool, store: str | None):
        port, mock = run.free_port(), f"http://127.0.0.1:{self.mock_port}"
        path = self.tmp / f"chatd-{label}.toml"
        path.write_text(config(port, mock, keys, store))
        log_path = self.tmp / f"chatd-{label}.log"
        env = {"CHATD_BENCH_KEY": run.DUMMY_KEY, "RUST_LOG": None}
        proc = self.procs.start(f"chatd-{label}", [binary, "serve", "--config", path,
                                                    "--bind", f"127.0.0.1:{port}"], log_path, env)
        run.wait_ready("chatd", proc, f"http://127.0.0.1:{port}/healthz", 60, log_path,
                       ok=lambda s: s == 200)
        if store:
            deadline = time.monotonic() + 30
            while "limits store connected" not in log_path.read_text():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"chatd never reached redis: {run.tail(log_path)}")
                time.sleep(0.1)
        return f"http://127.0.0.1:{port}", proc

    def start_redis(self) -> str | None:
        exe = shutil.which("redis-server")
        if not exe:
            self.notes.append("redis-server not installed: no Redis row")
            return None
        port = run.free_port()
        proc = self.procs.start("redis", [exe, "--port", port, "--bind", "127.0.0.1",
                                          "--save", "", "--appendonly", "no"],
                                self.tmp / "redis.log")
        deadline = time.monotonic() + 15
        while "Ready to accept connections" not in (self.tmp / "redis.log").read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start: {run.tail(self.tmp / 'redis.log')}")
            time.sleep(0.05)
        self.redis_proc = proc
        return f"redis://127.0.0.1:{port}/0"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", type=Path, help="release chatd binary of the base branch")
    p.add_argument("--duration", type=float, default=5)
    p.add_argument("--warmup", type=float, default=1)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--concurrency", default="1,64")
    p.add_argument("--sections", default="plain,stream")
    p.add_argument("--no-build", action="store_true")
    p.add_argument("--out", type=Path, default=run.RESULTS / "clients-latest.md")
    args = p.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.sections = [s for s in args.sections.split(",") if s]
    args.peers = ""
    bench = ClientsBench(args)
    bench.redis_proc = None
    started = time.monotonic()
    load = os.getloadavg()
    lines: list[str] = []
    try:
        if not args.no_build:
            cmd = ["cargo", "build", "--release", "-p", "chatd", "-p", "chatd-bench-mock-upstream",
                   "-p", "chatd-bench-loadgen"]
            run.log("$ " + " ".join(cmd))
            subprocess.run(cmd, cwd=run.REPO, check=True)
        bench.start_mock()
        oa = "/v1/chat/completions"
        body = run.openai_body("openrouter/mock/m")
        auth = [f"Authorization: Bearer {KEY}"]
        targets = []
        variants = []
        if args.baseline:
            variants.append(("main", args.baseline, False, None, []))
        this = bench.bin / "chatd"
        variants += [("keys off", this, False, None, []),
                     ("keys + limits (memory)", this, True, None, auth)]
        redis = bench.start_redis()
        if redis:
            variants.append(("keys + limits (redis)", this, True, redis, auth))
        for label, binary, keys, store, headers in variants:
            url, proc = bench.start_variant(label.replace(" ", "-"), binary, keys, store)
            targets.append(run.Target(label, oa, url + oa, body, headers, proc=proc))
        lines += [f"# chatd client keys and limits, A/B, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
                  "",
                  f"- load average at start {load[0]:.2f}; {args.rounds} interleaved rounds of "
                  f"{args.duration:g} s (+{args.warmup:g} s warm-up); medians of rounds",
                  f"- baseline: {args.baseline or '(none)'}; this tree: {run.binary_id(this)}"]
        for section in args.sections:
            stream = section == "stream"
            res = bench.section(targets, stream)
            lines += ["", f"## {'Streamed' if stream else 'Non-streamed'} chat completions (openai_compat)", "",
                      "| c | target | req/s | p50 ms | p99 ms | CPU µs / req | CPU vs keys off | CPU vs main | +p50 vs keys off |",
                      "|---|---|---|---|---|---|---|---|---|"]
            for c, by_target in res["runs"].items():
                def med(name, field):
                    vals = [r[field] for r in by_target.get(name, []) if field in r]
                    return statistics.median(vals) if vals else None

                def paired(name, ref, field, ratio):
                    a, b = by_target.get(name, []), by_target.get(ref, [])
                    vals = [(x[field] / y[field] - 1) * 100 if ratio else x[field] - y[field]
                            for x, y in zip(a, b) if field in x and field in y]
                    return statistics.median(vals) if vals else None

                for t in targets:
                    key = run.key(t)
                    cpu = med(key, "cpu_per_1k")
                    vs_off = paired(key, "keys off", "cpu_per_1k", True)
                    vs_main = paired(key, "main", "cpu_per_1k", True) if args.baseline else None
                    dp50 = paired(key, "keys off", "p50", False)
                    fmt = lambda v, f: "–" if v is None else format(v, f)  # noqa: E731
                    lines.append(
                        f"| {c} | {t.name} | {fmt(med(key, 'rps'), '.0f')} | {fmt(med(key, 'p50'), '.3f')} "
                        f"| {fmt(med(key, 'p99'), '.3f')} | {fmt(cpu and cpu * 1000, '.1f')} "
                        f"| {fmt(vs_off, '+.1f')}% | {fmt(vs_main, '+.1f')}% | {fmt(dp50, '+.3f')} |")
        if bench.redis_proc is not None:
            lines += ["", f"redis-server CPU during the run (not in chatd's column): "
                          f"{run.tree_cpu_seconds(bench.redis_proc.pid):.1f} s"]
    finally:
        bench.procs.stop_all()
        shutil.rmtree(bench.tmp, ignore_errors=True)
    if bench.notes:
        lines += ["", "Notes:"] + [f"- {n}" for n in bench.notes]
    lines += ["", f"Run: {time.monotonic() - started:.0f} s."]
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
