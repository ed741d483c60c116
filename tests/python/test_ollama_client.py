"""chatd's Ollama-compatible API (``/api/chat``, ``/api/generate``, ``/api/tags``,
``/api/show``, ``/api/version``, ``/api/embed``) through the official ``ollama`` Python client,
against mock upstreams.

Each call goes through an ``ollama``-adapter provider and an ``openai_compat`` one. Client
habits the answers must meet: ``chat()`` always sends ``"tools": []`` and an explicit
``stream``; tool-call arguments must be a JSON object; ``show()`` fails without ``model_info``;
``list()`` reads ``model``; errors are ``{"error": "<text>"}``, raised as ``ResponseError``.
"""

from __future__ import annotations

import json

import httpx
import ollama
import openai
import pytest

from harness import TIERS, Mocks
from mock_upstream import (
    ollama_chat,
    ollama_stream_error,
    openai_stream_error,
    upstream_messages,
    upstream_tool_names,
)
from providers import OLLAMA, OPENROUTER, PROVIDER_IDS, PROVIDERS, UNREGISTERED_MODEL, Provider, requests_seen

SYSTEM = "You are terse."
QUESTION = "What is the capital of France?"
MESSAGES = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
PIECES = ["The capital ", "of France ", "is Paris."]
ANSWER = "".join(PIECES)

WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Current weather", "parameters": WEATHER_SCHEMA}}
WEATHER_ARGS = {"city": "Paris"}
V1 = [0.5, -0.25, 0.125]
V2 = [1.0, 0.0, -0.75]


def upstream_call_id(p: Provider) -> str | None:
    return "call_Wx1" if p.dialect == "openai" else None


# --- chat -------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", PROVIDERS, ids=PROVIDER_IDS)
def test_chat(p: Provider, ollama_client: ollama.Client, mocks: Mocks, unique):
    up = p.upstream_model(unique)
    mock = p.mock(mocks)
    mock.on(up, p.answer(PIECES, prompt=17, completion=9))

    r = ollama_client.chat(model=p.client_model(up), messages=MESSAGES, options={"temperature": 0.25, "num_predict": 64})

    assert r.message.role == "assistant"
    assert r.message.content == ANSWER
    assert r.message.tool_calls is None
    assert r.done is True
    assert r.done_reason == "stop"
    assert (r.prompt_eval_count, r.eval_count) == (17, 9)

    rec = mock.only_request_for(up)
    assert (rec.method, rec.path) == ("POST", p.chat_path)
    p.check_auth(rec)
    assert not p.streamed(rec)
    assert [(m["role"], m["content"]) for m in upstream_messages(rec.body)] == [("system", SYSTEM), ("user", QUESTION)]
    assert p.temperature(rec.body) == 0.25
    assert p.max_tokens(rec.body) == 64
    assert not rec.body.get("tools"), "the client's empty tools list is no tool offer"


@pytest.mark.parametrize("p", PROVIDERS, ids=PROVIDER_IDS)
def test_chat_stream(p: Provider, ollama_client: ollama.Client, mocks: Mocks, unique):
    up = p.upstream_model(unique)
    mock = p.mock(mocks)
    mock.on(up, p.answer(PIECES, prompt=23, completion=11))

    chunks = list(ollama_client.chat(model=p.client_model(up), messages=MESSAGES, stream=True))

    assert [c.message.content for c in chunks if c.message.content] == PIECES
    assert all(c.done is False for c in chunks[:-1])
    last = chunks[-1]
    assert last.done is True
    assert last.done_reason == "stop"
    assert (last.prompt_eval_count, last.eval_count) == (23, 11)
    assert p.streamed(mock.only_request_for(up))


def test_chat_response_wire_format(http: httpx.Client, mocks: Mocks, unique):
    """NDJSON, one JSON object per line, each naming the model and saying whether it is done."""
    up = OPENROUTER.upstream_model(unique)
    OPENROUTER.mock(mocks).on(up, OPENROUTER.answer(PIECES, prompt=3, completion=3))

    resp = http.post("/api/chat", json={"model": OPENROUTER.client_model(up), "messages": MESSAGES})  # streams by default

    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/x-ndjson")
    assert resp.headers.get("x-chatd-provider") == "openrouter"
    lines = [json.loads(line) for line in resp.text.splitlines() if line.strip()]
    assert all(line["model"] == OPENROUTER.client_model(up) for line in lines)
    assert [line["done"] for line in lines] == [False] * (len(lines) - 1) + [True]
    assert "".join(line["message"]["content"] for line in lines) == ANSWER


@pytest.mark.parametrize("p", PROVIDERS, ids=PROVIDER_IDS)
def test_tool_call_round_trip(p: Provider, ollama_client: ollama.Client, mocks: Mocks, unique):
    up = p.upstream_model(unique)
    mock = p.mock(mocks)
    mock.on(
        up,
        p.answer([], prompt=40, completion=10, tool_calls=[(upstream_call_id(p), "get_weather", WEATHER_ARGS)]),
        p.answer(["It is 18°C in Paris."], prompt=70, completion=9),
    )
    user = {"role": "user", "content": "Weather in Paris?"}

    first = ollama_client.chat(model=p.client_model(up), messages=[user], tools=[WEATHER_TOOL])

    calls = first.message.tool_calls
    assert calls is not None and len(calls) == 1
    assert calls[0].function.name == "get_weather"
    assert calls[0].function.arguments == WEATHER_ARGS, "Ollama's shape: arguments as an object"

    second = ollama_client.chat(
        model=p.client_model(up),
        tools=[WEATHER_TOOL],
        messages=[
            user,
            {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_weather", "arguments": WEATHER_ARGS}}]},
            {"role": "tool", "content": "18°C", "tool_name": "get_weather"},
        ],
    )

    assert second.message.content == "It is 18°C in Paris."
    assert second.message.tool_calls is None

    rec1, rec2 = mock.requests_for(up)
    assert upstream_tool_names(rec1.body) == ["get_weather"]
    sent = upstream_messages(rec2.body)
    assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
    (call_id, name, args), = sent[1]["tool_calls"]
    assert (name, args) == ("get_weather", WEATHER_ARGS)
    assert sent[2]["content"] == "18°C"
    if p.dialect == "openai":
        # Ollama's client sends no call ids; an OpenAI-style upstream needs the pair linked.
        assert call_id and sent[2]["tool_call_id"] == call_id


# --- generate ---------------------------------------------------------------------------------


@pytest.mark.parametrize("p", PROVIDERS, ids=PROVIDER_IDS)
def test_generate(p: Provider, ollama_client: ollama.Client, mocks: Mocks, unique):
    up = p.upstream_model(unique)
    mock = p.mock(mocks)
    mock.on(up, p.answer(PIECES, prompt=12, completion=5))

    r = ollama_client.generate(model=p.client_model(up), prompt=QUESTION, system=SYSTEM)

    assert r.response == ANSWER
    assert r.done is True
    assert r.done_reason == "stop"
    assert (r.prompt_eval_count, r.eval_count) == (12, 5)
    rec = mock.only_request_for(up)
    assert rec.path == p.chat_path
    assert [(m["role"], m["content"]) for m in upstream_messages(rec.body)] == [("system", SYSTEM), ("user", QUESTION)]


@pytest.mark.parametrize("p", PROVIDERS, ids=PROVIDER_IDS)
def test_generate_stream(p: Provider, ollama_client: ollama.Client, mocks: Mocks, unique):
    up = p.upstream_model(unique)
    p.mock(mocks).on(up, p.answer(PIECES, prompt=12, completion=5))

    chunks = list(ollama_client.generate(model=p.client_model(up), prompt=QUESTION, stream=True))

    assert [c.response for c in chunks if c.response] == PIECES
    assert chunks[-1].done is True
    assert (chunks[-1].prompt_eval_count, chunks[-1].eval_count) == (12, 5)


def test_tier_name_routes(ollama_client: ollama.Client, mocks: Mocks):
    tier = "fast"
    upstream = TIERS[tier].split("/", 1)[1]
    mocks.ollama.on(upstream, ollama_chat(["tier answer"], prompt_eval_count=3, eval_count=2))
    before = len(mocks.ollama.requests_for(upstream))

    r = ollama_client.chat(model=tier, messages=MESSAGES)

    assert r.message.content == "tier answer"
    assert len(mocks.ollama.requests_for(upstream)) == before + 1


# --- models -----------------------------------------------------------------------------------


def test_list_is_the_model_list(ollama_client: ollama.Client, client: openai.OpenAI):
    tags = ollama_client.list()
    ids = [m.id for m in client.models.list()]
    names = [m.model for m in tags.models]
    assert sorted(names) == sorted(ids), "/api/tags lists the same ids as /v1/models"
    assert len(names) == len(set(names))


@pytest.mark.parametrize("model", ["ollama/qwen3:8b", "openrouter/anthropic/claude-x"], ids=PROVIDER_IDS)
def test_show_listed_model(model: str, ollama_client: ollama.Client):
    r = ollama_client.show(model)
    assert isinstance(r.modelinfo, dict), "model_info is required by the client"


def test_show_unknown_model_is_not_found(ollama_client: ollama.Client):
    with pytest.raises(ollama.ResponseError) as info:
        ollama_client.show("ollama/no-such-model:1b")
    assert info.value.status_code == 404
    assert isinstance(info.value.error, str) and info.value.error


def test_version(http: httpx.Client):
    resp = http.get("/api/version")
    assert resp.status_code == 200
    version = resp.json()["version"]
    assert isinstance(version, str) and version


# --- embeddings -------------------------------------------------------------------------------


@pytest.mark.parametrize("p", PROVIDERS, ids=PROVIDER_IDS)
def test_embed(p: Provider, ollama_client: ollama.Client, mocks: Mocks, unique):
    up = p.upstream_model(unique)
    mock = p.mock(mocks)
    mock.on(up, p.embed([V1, V2], prompt=8))

    r = ollama_client.embed(model=p.client_model(up), input=["alpha", "beta"])

    assert r.embeddings == [V1, V2]
    assert r.prompt_eval_count == 8
    rec = mock.only_request_for(up)
    assert (rec.path, rec.body["model"], rec.body["input"]) == (p.embed_path, up, ["alpha", "beta"])


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_unregistered_provider_is_response_error_404(stream: bool, ollama_client: ollama.Client, mocks: Mocks):
    seen = requests_seen(mocks)
    with pytest.raises(ollama.ResponseError) as info:
        result = ollama_client.chat(model=UNREGISTERED_MODEL, messages=MESSAGES, stream=stream)
        if stream:
            list(result)
    e = info.value
    assert e.status_code == 404
    assert isinstance(e.error, str), f"Ollama's error shape is a string, got {e.error!r}"
    assert "kimi" in e.error
    assert requests_seen(mocks) == seen


def test_error_body_is_ollama_shaped(http: httpx.Client):
    resp = http.post("/api/chat", json={"model": UNREGISTERED_MODEL, "messages": MESSAGES, "stream": False})
    assert resp.status_code == 404
    body = resp.json()
    # Ollama's shape (a string under "error"), with chatd's request id beside it.
    assert set(body) == {"error", "request_id"} and isinstance(body["error"], str)
    assert body["request_id"] == resp.headers["x-request-id"]


@pytest.mark.parametrize("p", PROVIDERS, ids=PROVIDER_IDS)
def test_upstream_429(p: Provider, ollama_client: ollama.Client, mocks: Mocks, unique):
    up = p.upstream_model(unique)
    mock = p.mock(mocks)
    mock.on(up, p.error(429, "Rate limit exceeded: free-models-per-min", retry_after="7"))

    with pytest.raises(ollama.ResponseError) as info:
        ollama_client.chat(model=p.client_model(up), messages=MESSAGES)

    assert info.value.status_code == 429
    assert "Rate limit exceeded: free-models-per-min" in info.value.error
    assert len(mock.requests_for(up)) == 1


@pytest.mark.parametrize("p", PROVIDERS, ids=PROVIDER_IDS)
def test_upstream_500(p: Provider, ollama_client: ollama.Client, mocks: Mocks, unique):
    up = p.upstream_model(unique)
    mock = p.mock(mocks)
    mock.on(up, p.error(500, "model runner crashed (mock)"))

    with pytest.raises(ollama.ResponseError) as info:
        list(ollama_client.chat(model=p.client_model(up), messages=MESSAGES, stream=True))

    assert info.value.status_code == 502
    assert "model runner crashed (mock)" in info.value.error


@pytest.mark.parametrize(
    "p, scenario",
    [
        (OLLAMA, ollama_stream_error("Partial answer", "model runner crashed (mock)")),
        (OPENROUTER, openai_stream_error("Partial answer", {"message": "model runner crashed (mock)", "code": 502})),
    ],
    ids=PROVIDER_IDS,
)
def test_mid_stream_failure(p: Provider, scenario, ollama_client: ollama.Client, mocks: Mocks, unique):
    """After streaming began the failure is an ``{"error": ...}`` line, which the client raises."""
    up = p.upstream_model(unique)
    p.mock(mocks).on(up, scenario)

    received: list[str] = []
    with pytest.raises(ollama.ResponseError) as info:
        for chunk in ollama_client.chat(model=p.client_model(up), messages=MESSAGES, stream=True):
            assert not chunk.done, "a failed stream must not claim a normal finish"
            if chunk.message.content:
                received.append(chunk.message.content)

    assert received == ["Partial answer"]
    assert "model runner crashed (mock)" in info.value.error
