#!/usr/bin/env python3
"""chatd memory under big request bodies: bursts of concurrent requests whose bodies are just
under max_body_bytes, against a release chatd and the mock upstream, sampling chatd's RSS.

    python3 bench/bodies.py                          # 5 bursts of 64 x 4 MiB, default shape
    python3 bench/bodies.py --shape one              # one 4 MiB message per body instead
    python3 bench/bodies.py --chatd OTHER/chatd --no-build --env MALLOC_MMAP_THRESHOLD_=1048576

Reports, per burst: the answers (200s and errors by code), the peak RSS while the burst ran,
and the RSS 1 s and 5 s after it ended; against the baseline before the first burst and the
bytes in flight (concurrency x body size). Written to bench/results/bodies-latest.md (raw
samples to bodies-latest.json). See bench/README.md. Stdlib only; not a test: timing and
memory depend on the machine.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from run import REPO, RESULTS, Procs, free_port, log, machine_and_versions, tail, wait_ready

MIB = 1024 * 1024


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Sampler(threading.Thread):
    """chatd's RSS every `every` seconds: (monotonic time, KiB)."""

    def __init__(self, pid: int, every: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.samples: list[tuple[float, int]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.samples.append((time.monotonic(), rss_kib(self.pid)))
            time.sleep(self.every)

    def between(self, start: float, end: float) -> list[int]:
        return [kib for t, kib in self.samples if start <= t <= end]

    def at(self, t: float) -> int:
        """The last sample taken at or before t."""
        before = [kib for s, kib in self.samples if s <= t]
        return before[-1] if before else 0


def body(shape: str, size: int) -> bytes:
    """A /v1/chat body of exactly `size` bytes: one long user message (`one`), or a long
    conversation of ~20 KiB messages with text that needs JSON escaping (`many`), the shape
    of a coding agent's context."""
    def render(messages):
        return json.dumps({"model": "ollama/m", "messages": messages}).encode()

    if shape == "one":
        empty = len(render([{"role": "user", "content": ""}]))
        return render([{"role": "user", "content": "x" * (size - empty)}])
    line = 'fn main() {\n    println!("hello, \\"world\\"");\n}\n'
    piece = (line * (20 * 1024 // len(line)))[: 20 * 1024]
    messages = []
    while len(render(messages)) + 2 * len(json.dumps(piece)) < size:
        role = "user" if len(messages) % 2 == 0 else "assistant"
        messages.append({"role": role, "content": piece})
    messages.append({"role": "user", "content": ""})
    rest = size - len(render(messages))
    messages[-1]["content"] = "y" * rest
    out = render(messages)
    assert len(out) == size, (len(out), size)
    return out


def one_request(port: int, payload: bytes, results: list, index: int, barrier) -> None:
    barrier.wait()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("POST", "/v1/chat", payload, {"content-type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        code = ""
        if resp.status != 200:
            try:
                code = json.loads(data)["error"]["code"]
            except (ValueError, KeyError, TypeError):
                code = data[:80].decode(errors="replace")
        results[index] = (resp.status, code)
    except OSError as e:
        results[index] = (0, f"connection: {e}")
    finally:
        conn.close()


def burst(port: int, payload: bytes, concurrency: int) -> tuple[float, float, list]:
    results: list = [None] * concurrency
    barrier = threading.Barrier(concurrency)
    threads = [threading.Thread(target=one_request, args=(port, payload, results, i, barrier))
               for i in range(concurrency)]
    for t in threads:
        t.start()
    start = time.monotonic()
    for t in threads:
        t.join()
    return start, time.monotonic(), results


def answers(results: list) -> str:
    counts: dict[str, int] = {}
    for status, code in results:
        key = "200" if status == 200 else f"{status} {code}".strip()
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{n}× {k}" for k, n in sorted(counts.items()))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bursts", type=int, default=5, help="bursts to send (default 5)")
    p.add_argument("--concurrency", type=int, default=64, help="requests per burst (default 64)")
    p.add_argument("--body-bytes", type=int, default=4 * MIB - 4096,
                   help="size of each body (default 4 MiB - 4 KiB, under max_body_bytes)")
    p.add_argument("--shape", choices=["many", "one"], default="many",
                   help="many ~20 KiB messages (default) or one long message")
    p.add_argument("--settle", type=float, default=5.0,
                   help="seconds between bursts, RSS sampled throughout (default 5)")
    p.add_argument("--chatd", type=Path, help="chatd binary (default target/release/chatd)")
    p.add_argument("--label", default="", help="what to call this binary in the report")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment for chatd (repeatable)")
    p.add_argument("--chatd-config", action="append", default=[], metavar="LINE",
                   help="extra line in chatd's [chatd] table (repeatable)")
    p.add_argument("--no-build", action="store_true", help="use the existing release binaries")
    p.add_argument("--out", type=Path, default=RESULTS / "bodies-latest.md")
    args = p.parse_args()

    target_dir = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    release = (target_dir if target_dir.is_absolute() else REPO / target_dir) / "release"
    chatd_bin = args.chatd or release / "chatd"
    if not args.no_build:
        cmd = ["cargo", "build", "--release", "-p", "chatd", "-p", "chatd-bench-mock-upstream"]
        log("$ " + " ".join(cmd))
        subprocess.run(cmd, cwd=REPO, check=True)
    load_at_start = os.getloadavg()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    procs, tmp = Procs(), Path(tempfile.mkdtemp(prefix="chatd-bodies-"))
    payload = body(args.shape, args.body_bytes)
    in_flight = args.concurrency * len(payload)
    rows, raw = [], {"args": {k: str(v) for k, v in vars(args).items()}, "bursts": []}
    try:
        mock_port = free_port()
        mock_log = tmp / "mock.log"
        mock = procs.start("mock", [release / "mock-upstream", "--bind", f"127.0.0.1:{mock_port}",
                                    "--workers", "1"], mock_log)
        deadline = time.monotonic() + 15
        while "listening on" not in (mock_log.read_text() if mock_log.exists() else ""):
            if mock.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mock-upstream did not start: {tail(mock_log)}")
            time.sleep(0.05)
        port = free_port()
        config = tmp / "chatd.toml"
        extra = "\n".join(args.chatd_config)
        config.write_text(f"""[chatd]
bind = "127.0.0.1:{port}"
default_provider = "ollama"
adapters_dir = ""
{extra}

[chatd.providers.ollama]
adapter = "ollama"
base_url = "http://127.0.0.1:{mock_port}"
""")
        env = dict(kv.split("=", 1) for kv in args.env)
        chatd_log = tmp / "chatd.log"
        chatd = procs.start("chatd", [chatd_bin, "serve", "--config", config], chatd_log, env)
        wait_ready("chatd", chatd, f"http://127.0.0.1:{port}/healthz", 60, chatd_log,
                   ok=lambda s: s == 200)
        # One small request first, so the baseline includes what any first request sets up.
        burst(port, body("one", 1024), 1)
        time.sleep(1.0)
        sampler = Sampler(chatd.pid)
        sampler.start()
        time.sleep(0.5)
        baseline = sampler.at(time.monotonic())
        for n in range(1, args.bursts + 1):
            start, end, results = burst(port, payload, args.concurrency)
            time.sleep(args.settle)
            peak = max(sampler.between(start, end + 0.2), default=0)
            after1, after5 = sampler.at(end + 1.0), sampler.at(end + args.settle)
            rows.append((n, end - start, answers(results), peak, after1, after5))
            raw["bursts"].append({"burst": n, "seconds": end - start, "answers": results,
                                  "peak_kib": peak, "after_1s_kib": after1,
                                  "after_settle_kib": after5})
            log(f"burst {n}: {end - start:.2f} s, {answers(results)}; peak {peak / 1024:.0f} MiB, "
                f"+1 s {after1 / 1024:.0f} MiB, +{args.settle:g} s {after5 / 1024:.0f} MiB")
        sampler.stopped.set()
        raw["samples"] = sampler.samples
        hwm = 0
        with open(f"/proc/{chatd.pid}/status") as f:
            hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except KeyboardInterrupt:
        log("interrupted: stopping everything that was started")
        return 130
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)

    now = datetime.datetime.now(datetime.timezone.utc)
    mib = lambda kib: f"{kib / 1024:.0f}"
    label = args.label or str(chatd_bin)
    settings = [f"{k}={v}" for k, v in env.items()] + args.chatd_config
    lines = [f"# chatd memory under big bodies, {now:%Y-%m-%d %H:%M} UTC", "",
             *machine_and_versions(load_at_start, chatd_bin),
             f"- binary: {label}" + (f"; {', '.join(settings)}" if settings else ""),
             f"- {args.bursts} bursts of {args.concurrency} concurrent `POST /v1/chat` "
             f"(ollama adapter, mock upstream), bodies of {len(payload):,} bytes "
             f"({args.shape} message{'s' if args.shape == 'many' else ''}), {args.settle:g} s apart",
             f"- in flight per burst: {in_flight / MIB:.0f} MiB; baseline RSS {mib(baseline)} MiB; "
             f"target: peak ≤ {mib(baseline + 2 * in_flight / 1024)} MiB (2× in flight + "
             f"baseline), settled ≤ {mib(baseline + 64 * 1024)} MiB (baseline + 64 MiB); "
             f"VmHWM at the end {mib(hwm)} MiB",
             "",
             "| burst | took s | answers | peak RSS MiB | RSS +1 s MiB | "
             f"RSS +{args.settle:g} s MiB |",
             "|---|---|---|---|---|---|"]
    for n, took, ans, peak, after1, after5 in rows:
        lines.append(f"| {n} | {took:.2f} | {ans} | {mib(peak)} | {mib(after1)} | {mib(after5)} |")
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(raw) + "\n")
    log(f"written: {args.out} and {args.out.with_suffix('.json').name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
