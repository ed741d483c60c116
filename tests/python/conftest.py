"""Fixtures for the chatd "real client" suite: mock upstreams and one chatd process.

chatd is started once per session with a generated config whose providers all point at
in-process mock upstreams on loopback (see ``harness.py`` for the binary lookup and config).
Its stderr goes to a file; when a test fails, the part of it written during that test is
attached to the report, as are the requests the mocks received during it.
"""

from __future__ import annotations

import itertools
import subprocess
import time
from typing import Iterator

import anthropic
import httpx
import ollama
import openai
import pytest

from harness import (
    CLOUD_MODELS,
    OLLAMA_MODELS,
    OPENROUTER_MODELS,
    STARTUP_TIMEOUT_SECS,
    Chatd,
    Mocks,
    chatd_binary,
    chatd_env,
    free_port,
    stop,
    wait_healthy,
    write_config,
)
from mock_upstream import MockUpstream, ollama_show, ollama_tags, ollama_version, openai_models

_model_counter = itertools.count(1)

# Where failure reports find chatd, and where the logs stood when a test began.
CHATD_KEY = pytest.StashKey[Chatd]()
MARK_KEY = pytest.StashKey[tuple[int, dict[str, int]]]()
MOCKS_KEY = pytest.StashKey[Mocks]()


@pytest.fixture
def unique():
    """``unique("qwen3:8b")`` → ``"t7-qwen3:8b"``: a model name no other test uses, so each
    test owns its mock scenario and can find exactly its own upstream requests."""
    return lambda base: f"t{next(_model_counter)}-{base}"


# --- mocks -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def mocks() -> Iterator[Mocks]:
    m = Mocks(
        ollama=MockUpstream(
            "ollama",
            {"/api/tags": ollama_tags(OLLAMA_MODELS), "/api/version": ollama_version()},
            # For a chatd that asks its Ollama upstream when a client calls /api/show.
            path_routes={"/api/show": ollama_show()},
        ),
        cloud=MockUpstream("ollama_cloud", {"/api/tags": ollama_tags(CLOUD_MODELS)}),
        openrouter=MockUpstream("openrouter", {"/v1/models": openai_models(OPENROUTER_MODELS)}),
    )
    for mock in m.all():
        mock.start()
    yield m
    for mock in m.all():
        mock.stop()


# --- chatd -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def chatd(mocks: Mocks, tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Iterator[Chatd]:
    binary = chatd_binary()
    workdir = tmp_path_factory.mktemp("chatd")
    config_path = workdir / "lakehouse.toml"
    write_config(config_path, mocks)
    failures = []
    # The port is chosen free, then released for chatd to bind: retry if someone took it.
    for attempt in range(3):
        port = free_port()
        stderr_path = workdir / f"chatd-{attempt}.stderr.log"
        with open(stderr_path, "wb") as err:
            proc = subprocess.Popen(
                [str(binary), "serve", "--config", str(config_path), "--bind", f"127.0.0.1:{port}"],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                env=chatd_env(),
                cwd=workdir,
            )
        handle = Chatd(proc=proc, port=port, stderr_path=stderr_path, config_path=config_path)
        why = wait_healthy(proc, port, time.monotonic() + STARTUP_TIMEOUT_SECS)
        if why is None:
            pytestconfig.stash[CHATD_KEY] = handle
            try:
                yield handle
            finally:
                stop(proc)
            return
        stop(proc)
        log = handle.stderr_text()
        failures.append(f"attempt {attempt + 1}: {why}\n--- chatd stderr ({stderr_path}) ---\n{log}")
        if "cannot listen" not in log:
            break
    pytest.fail("chatd failed to start:\n" + "\n".join(failures), pytrace=False)


@pytest.fixture
def client(chatd: Chatd) -> openai.OpenAI:
    """The official SDK pointed at chatd; no retries so each error is seen as it is."""
    return openai.OpenAI(
        base_url=f"{chatd.url}/v1",
        api_key="unused",
        max_retries=0,
        timeout=30.0,
        http_client=openai.DefaultHttpxClient(trust_env=False),
    )


@pytest.fixture
def anthropic_client(chatd: Chatd) -> anthropic.Anthropic:
    """The official Anthropic SDK pointed at chatd (its base URL has no ``/v1``)."""
    return anthropic.Anthropic(
        base_url=chatd.url,
        api_key="unused",
        max_retries=0,
        timeout=30.0,
        http_client=anthropic.DefaultHttpxClient(trust_env=False),
    )


@pytest.fixture
def ollama_client(chatd: Chatd) -> ollama.Client:
    """The official Ollama Python client pointed at chatd's Ollama-compatible API."""
    return ollama.Client(host=chatd.url, timeout=30.0, trust_env=False)


@pytest.fixture
def http(chatd: Chatd) -> Iterator[httpx.Client]:
    """A plain HTTP client on chatd, for what the SDKs hide (headers, raw bodies, raw SSE)."""
    with httpx.Client(base_url=chatd.url, timeout=30.0, trust_env=False) as c:
        yield c


# --- failure reports -------------------------------------------------------------------------



@pytest.fixture(autouse=True)
def _mark_logs(request: pytest.FixtureRequest, chatd: Chatd, mocks: Mocks) -> None:
    """Remembers where chatd's log and the mocks' recordings stood when the test began."""
    request.node.stash[MARK_KEY] = (
        chatd.stderr_size(),
        {m.name: len(m.requests) for m in mocks.all()},
    )
    request.node.stash[MOCKS_KEY] = mocks



@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if not report.failed or report.when == "teardown":
        return
    handle = item.config.stash.get(CHATD_KEY, None)
    mark = item.stash.get(MARK_KEY, None)
    if handle is None or mark is None:
        return
    log_offset, request_counts = mark
    time.sleep(0.05)  # let chatd finish writing the failing request's log line
    report.sections.append(("chatd stderr (during this test)", handle.stderr_text(log_offset) or "<empty>"))
    mocks = item.stash.get(MOCKS_KEY, None)
    if mocks is not None:
        lines = []
        for m in mocks.all():
            for rec in m.requests[request_counts.get(m.name, 0):]:
                lines.append(f"[{m.name}] {rec}")
        report.sections.append(("mock upstream requests (during this test)", "\n".join(lines) or "<none>"))
