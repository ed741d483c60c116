"""chatd through the official OpenAI Python SDK, against mock upstreams.

Every request goes through ``openai.OpenAI(base_url=<chatd>/v1)``; the mocks record what chatd
sent upstream, so each test checks both sides: what the SDK parsed out of chatd's answer,
and what the upstream was asked for in its own dialect.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Optional

import openai
import pytest

from harness import (
    CLOUD_MODELS,
    OLLAMA_CLOUD_KEY,
    OLLAMA_MODELS,
    OPENROUTER_KEY,
    OPENROUTER_MODELS,
    TIERS,
    Mocks,
)
from mock_upstream import (
    Gate,
    MockUpstream,
    Recorded,
    Scenario,
    gated,
    http_error,
    ollama_chat,
    ollama_generate,
    ollama_stream_error,
    openai_chat,
    openai_stream_error,
)

SYSTEM = "You are terse."
QUESTION = "What is the capital of France?"
MESSAGES = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
PIECES = ["The capital ", "of France ", "is Paris."]

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Current time in a time zone",
        "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]},
    },
}
TOOLS = [WEATHER_TOOL, TIME_TOOL]


# --- the three adapters, as the client and the upstream see them ---------------------------


@dataclass(frozen=True)
class Route:
    """One way through chatd: how the client names a model and what the upstream must see."""

    id: str
    mock_name: str  # attribute of Mocks
    path: str  # upstream path chatd must call
    key: Optional[str]  # expected bearer token, None = no authorization header at all
    upstream_base: str
    to_client: Callable[[str], str]  # upstream model name -> model name the client sends
    dialect: str  # "ollama_chat" | "ollama_generate" | "openai"

    def mock(self, mocks: Mocks) -> MockUpstream:
        return getattr(mocks, self.mock_name)

    def upstream_model(self, unique: Callable[[str], str]) -> str:
        if self.dialect == "openai":
            return f"acme/{unique(self.upstream_base)}"  # vendor/model, as OpenRouter names them
        return unique(self.upstream_base)

    def answer(self, pieces: list[str], prompt: int, completion: int) -> Scenario:
        if self.dialect == "ollama_chat":
            return ollama_chat(pieces, prompt_eval_count=prompt, eval_count=completion)
        if self.dialect == "ollama_generate":
            return ollama_generate(pieces, prompt_eval_count=prompt, eval_count=completion)
        return openai_chat(pieces, prompt_tokens=prompt, completion_tokens=completion)

    def check_auth(self, rec: Recorded) -> None:
        if self.key is None:
            assert "authorization" not in rec.headers, f"{self.id} must get no credentials, got {rec.headers}"
        else:
            assert rec.headers.get("authorization") == f"Bearer {self.key}"

    def check_conversation(self, body: dict) -> None:
        """The system + user turns of MESSAGES, in this upstream's dialect."""
        if self.dialect == "ollama_generate":
            assert body["prompt"] == f"{SYSTEM}\n\nUser: {QUESTION}"
            assert "messages" not in body
        else:
            assert [{k: m[k] for k in ("role", "content")} for m in body["messages"]] == MESSAGES


OLLAMA = Route("ollama", "ollama", "/api/chat", None, "qwen3:8b", lambda m: f"ollama/{m}", "ollama_chat")
CLOUD = Route(
    "cloud_suffix", "cloud", "/api/generate", OLLAMA_CLOUD_KEY, "gpt-oss:120b", lambda m: f"{m}:cloud", "ollama_generate"
)
CLOUD_PREFIX = Route(
    "cloud_prefix",
    "cloud",
    "/api/generate",
    OLLAMA_CLOUD_KEY,
    "gpt-oss:120b",
    lambda m: f"ollama_cloud/{m}",
    "ollama_generate",
)
OPENROUTER = Route(
    "openrouter", "openrouter", "/v1/chat/completions", OPENROUTER_KEY, "model-x", lambda m: f"openrouter/{m}", "openai"
)
ROUTES = [OLLAMA, CLOUD, CLOUD_PREFIX, OPENROUTER]
STREAM_ROUTES = [OLLAMA, CLOUD, OPENROUTER]


def route_ids(routes: list[Route]) -> list[str]:
    return [r.id for r in routes]


def assert_subset(actual: Any, expected: Any, where: str = "") -> None:
    """Every key of ``expected`` (recursively, lists element-wise) is in ``actual`` with the
    same value; ``actual`` may carry more keys."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: expected an object, got {actual!r}"
        for k, v in expected.items():
            assert k in actual, f"{where}.{k} missing in {actual!r}"
            assert_subset(actual[k], v, f"{where}.{k}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{where}: {actual!r} != {expected!r}"
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_subset(a, e, f"{where}[{i}]")
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


def collect(stream) -> list:
    chunks = list(stream)
    assert chunks, "the stream yielded no chunks"
    return chunks


def reassemble_tool_calls(chunks) -> dict[int, dict[str, str]]:
    """Tool-call deltas folded by index, the way OpenAI clients rebuild them."""
    calls: dict[int, dict[str, str]] = {}
    for ch in chunks:
        for choice in ch.choices:
            for d in choice.delta.tool_calls or []:
                call = calls.setdefault(d.index, {"id": "", "type": "", "name": "", "arguments": ""})
                if d.id:
                    call["id"] = d.id
                if d.type:
                    call["type"] = d.type
                if d.function and d.function.name:
                    call["name"] += d.function.name
                if d.function and d.function.arguments:
                    call["arguments"] += d.function.arguments
    return calls


# --- 1. non-streaming through each adapter --------------------------------------------------


@pytest.mark.parametrize("route", ROUTES, ids=route_ids(ROUTES))
def test_completion_through_each_adapter(route: Route, client: openai.OpenAI, mocks: Mocks, unique):
    up = route.upstream_model(unique)
    mock = route.mock(mocks)
    mock.on(up, route.answer(PIECES, prompt=17, completion=9))

    resp = client.chat.completions.create(
        model=route.to_client(up), messages=MESSAGES, temperature=0.25, max_tokens=64
    )

    assert resp.object == "chat.completion"
    assert resp.id.startswith("chatcmpl-")
    assert len(resp.choices) == 1
    choice = resp.choices[0]
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert choice.message.content == "The capital of France is Paris."
    assert choice.message.tool_calls is None
    assert choice.finish_reason == "stop"
    assert resp.usage is not None
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.total_tokens) == (17, 9, 26)

    rec = mock.only_request_for(up)  # the routing prefix / ":cloud" suffix is gone upstream
    assert (rec.method, rec.path) == ("POST", route.path)
    route.check_auth(rec)
    body = rec.body
    assert body["model"] == up
    route.check_conversation(body)
    if route.dialect == "openai":
        assert body.get("stream") in (None, False)
        assert (body["temperature"], body["max_tokens"]) == (0.25, 64)
        assert "response_format" not in body
    else:
        assert body["stream"] is False  # Ollama would stream if it were absent
        assert body["options"]["temperature"] == 0.25
        assert body["options"]["num_predict"] == 64
        assert "format" not in body


def test_second_client_request_is_a_second_upstream_request(client: openai.OpenAI, mocks: Mocks, unique):
    """Two completions, two answers, two distinct ids (nothing cached or merged)."""
    up = OLLAMA.upstream_model(unique)
    mocks.ollama.on(
        up,
        ollama_chat(["first"], prompt_eval_count=1, eval_count=1),
        ollama_chat(["second"], prompt_eval_count=2, eval_count=2),
    )
    a = client.chat.completions.create(model=f"ollama/{up}", messages=MESSAGES)
    b = client.chat.completions.create(model=f"ollama/{up}", messages=MESSAGES)
    assert (a.choices[0].message.content, b.choices[0].message.content) == ("first", "second")
    assert a.id != b.id
    assert len(mocks.ollama.requests_for(up)) == 2


# --- routing: tiers and the default provider -------------------------------------------------


@pytest.mark.parametrize(
    "client_model, mock_name, upstream_model",
    [
        ("fast", "ollama", "qwen3:8b"),
        ("judge", "cloud", "kimi-k2.6"),
        ("smart", "openrouter", "anthropic/claude-x"),
    ],
    ids=["tier_fast_to_ollama", "tier_judge_to_cloud", "tier_smart_to_openrouter"],
)
def test_tiers_route_to_their_model(client: openai.OpenAI, mocks: Mocks, client_model, mock_name, upstream_model):
    route = {"ollama": OLLAMA, "cloud": CLOUD, "openrouter": OPENROUTER}[mock_name]
    mock = route.mock(mocks)
    mock.on(upstream_model, route.answer(["tier answer"], prompt=3, completion=2))
    before = len(mock.requests_for(upstream_model))

    resp = client.chat.completions.create(model=client_model, messages=MESSAGES)

    assert resp.choices[0].message.content == "tier answer"
    recs = mock.requests_for(upstream_model)
    assert len(recs) == before + 1
    assert recs[-1].path == route.path


def test_bare_model_name_goes_to_default_provider(client: openai.OpenAI, mocks: Mocks, unique):
    up = unique("llama3.2:3b")
    mocks.ollama.on(up, ollama_chat(["default route"], prompt_eval_count=4, eval_count=2))
    resp = client.chat.completions.create(model=up, messages=MESSAGES)
    assert resp.choices[0].message.content == "default route"
    rec = mocks.ollama.only_request_for(up)
    assert rec.path == "/api/chat"


# --- 2. streaming through each adapter ------------------------------------------------------


@pytest.mark.parametrize("include_usage", [False, True], ids=["no_usage", "include_usage"])
@pytest.mark.parametrize("route", STREAM_ROUTES, ids=route_ids(STREAM_ROUTES))
def test_streaming_through_each_adapter(route: Route, include_usage: bool, client: openai.OpenAI, mocks: Mocks, unique):
    up = route.upstream_model(unique)
    mock = route.mock(mocks)
    mock.on(up, route.answer(PIECES, prompt=23, completion=11))
    extra = {"stream_options": {"include_usage": True}} if include_usage else {}

    stream = client.chat.completions.create(model=route.to_client(up), messages=MESSAGES, stream=True, **extra)
    chunks = collect(stream)

    assert all(ch.object == "chat.completion.chunk" for ch in chunks)
    assert len({ch.id for ch in chunks}) == 1, "every chunk of one completion shares its id"
    assert chunks[0].choices and chunks[0].choices[0].delta.role == "assistant"
    with_choices = [ch for ch in chunks if ch.choices]
    deltas = [ch.choices[0].delta.content for ch in with_choices if ch.choices[0].delta.content]
    assert "".join(deltas) == "The capital of France is Paris."
    assert deltas == PIECES, "each upstream piece is forwarded as it arrives"
    assert with_choices[-1].choices[0].finish_reason == "stop"
    assert all(ch.choices[0].finish_reason is None for ch in with_choices[:-1])

    if include_usage:
        last = chunks[-1]
        assert last.choices == []
        assert last.usage is not None
        assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (23, 11, 34)
        assert all(ch.usage is None for ch in chunks[:-1])
    else:
        assert all(ch.usage is None for ch in chunks)
        assert chunks[-1] is with_choices[-1]

    rec = mock.only_request_for(up)
    assert (rec.method, rec.path) == ("POST", route.path)
    route.check_auth(rec)
    assert rec.body["model"] == up
    assert rec.body["stream"] is True
    route.check_conversation(rec.body)
    if route.dialect == "openai":
        # chatd asks for usage upstream either way; whether the client sees it is its choice.
        assert rec.body["stream_options"] == {"include_usage": True}


# Pieces the upstream sends before its first content piece: Ollama none; the OpenAI mock a
# comment line and a role chunk.
LEADING_PIECES = {"ollama_chat": 0, "ollama_generate": 0, "openai": 2}


@pytest.mark.parametrize("route", STREAM_ROUTES, ids=route_ids(STREAM_ROUTES))
def test_stream_is_forwarded_before_upstream_finishes(route: Route, client: openai.OpenAI, mocks: Mocks, unique):
    """The upstream holds its stream after the first content piece until the client has
    received that piece through chatd: a gateway that buffered the answer would deliver it
    only after the hold timed out."""
    up = route.upstream_model(unique)
    gate = Gate(timeout=4.0)  # below chatd's 5 s per-gap upstream timeout
    route.mock(mocks).on(up, gated(route.answer(PIECES, prompt=5, completion=3), after=LEADING_PIECES[route.dialect] + 1, gate=gate))

    received: list[str] = []
    first_arrived_during_hold = None
    for chunk in client.chat.completions.create(model=route.to_client(up), messages=MESSAGES, stream=True):
        for choice in chunk.choices:
            if choice.delta.content:
                if first_arrived_during_hold is None:
                    first_arrived_during_hold = not gate.timed_out
                    gate.release()
                received.append(choice.delta.content)

    assert first_arrived_during_hold is True, "the first piece only arrived after the upstream stopped holding"
    assert not gate.timed_out
    assert received == PIECES


# --- 3. JSON mode ---------------------------------------------------------------------------


@pytest.mark.parametrize("route", [OLLAMA, CLOUD, OPENROUTER], ids=route_ids([OLLAMA, CLOUD, OPENROUTER]))
def test_json_mode(route: Route, client: openai.OpenAI, mocks: Mocks, unique):
    up = route.upstream_model(unique)
    mock = route.mock(mocks)
    mock.on(up, route.answer(['{"capital": ', '"Paris"}'], prompt=30, completion=6))

    resp = client.chat.completions.create(
        model=route.to_client(up),
        messages=[{"role": "user", "content": "Capital of France as JSON"}],
        response_format={"type": "json_object"},
    )

    assert json.loads(resp.choices[0].message.content) == {"capital": "Paris"}
    body = mock.only_request_for(up).body
    if route.dialect == "openai":
        assert body["response_format"] == {"type": "json_object"}
    else:
        assert body["format"] == "json"


# --- 4. tool calls ----------------------------------------------------------------------------


def test_tool_call_round_trip_openrouter(client: openai.OpenAI, mocks: Mocks, unique):
    up = OPENROUTER.upstream_model(unique)
    args = '{"city": "Paris", "unit": "celsius"}'
    upstream_call = {"id": "call_Wx1", "type": "function", "function": {"name": "get_weather", "arguments": args}}
    mocks.openrouter.on(
        up,
        openai_chat([], prompt_tokens=50, completion_tokens=12, tool_calls=[upstream_call]),
        openai_chat(["It is 18°C in Paris."], prompt_tokens=80, completion_tokens=8),
    )
    user = {"role": "user", "content": "Weather in Paris?"}

    first = client.chat.completions.create(
        model=f"openrouter/{up}", messages=[user], tools=TOOLS, tool_choice="auto"
    )

    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    call = calls[0]
    assert (call.id, call.type, call.function.name) == ("call_Wx1", "function", "get_weather")
    assert call.function.arguments == args
    assert json.loads(call.function.arguments) == {"city": "Paris", "unit": "celsius"}
    assert (first.usage.prompt_tokens, first.usage.completion_tokens) == (50, 12)

    assistant = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": call.id, "type": "function", "function": {"name": call.function.name, "arguments": call.function.arguments}}
        ],
    }
    tool_result = {"role": "tool", "tool_call_id": call.id, "content": '{"temperature_c": 18}'}
    second = client.chat.completions.create(
        model=f"openrouter/{up}", messages=[user, assistant, tool_result], tools=TOOLS
    )

    assert second.choices[0].message.content == "It is 18°C in Paris."
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.tool_calls is None

    rec1, rec2 = mocks.openrouter.requests_for(up)
    assert rec1.body["tools"] == TOOLS
    assert rec1.body["tool_choice"] == "auto"
    assert rec2.body["tools"] == TOOLS
    sent = rec2.body["messages"]
    assert len(sent) == 3
    assert_subset(sent[0], user, "messages[0]")
    # OpenAI shape upstream: arguments stay a JSON string, the id is carried through.
    assert_subset(
        sent[1],
        {"role": "assistant", "content": None, "tool_calls": [upstream_call]},
        "messages[1]",
    )
    assert_subset(sent[2], {"role": "tool", "tool_call_id": "call_Wx1", "content": '{"temperature_c": 18}'}, "messages[2]")


def test_tool_call_round_trip_ollama(client: openai.OpenAI, mocks: Mocks, unique):
    up = OLLAMA.upstream_model(unique)
    ollama_call = {"function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}}
    mocks.ollama.on(
        up,
        ollama_chat([], prompt_eval_count=40, eval_count=10, tool_calls=[ollama_call]),
        ollama_chat(["It is 18°C in Paris."], prompt_eval_count=70, eval_count=9),
    )
    user = {"role": "user", "content": "Weather in Paris?"}

    first = client.chat.completions.create(model=f"ollama/{up}", messages=[user], tools=TOOLS)

    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    call = calls[0]
    assert isinstance(call.id, str) and call.id
    assert (call.type, call.function.name) == ("function", "get_weather")
    assert isinstance(call.function.arguments, str)  # OpenAI shape: a JSON string
    assert json.loads(call.function.arguments) == {"city": "Paris", "unit": "celsius"}
    assert (first.usage.prompt_tokens, first.usage.completion_tokens) == (40, 10)

    assistant = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": call.id, "type": "function", "function": {"name": call.function.name, "arguments": call.function.arguments}}
        ],
    }
    tool_result = {"role": "tool", "tool_call_id": call.id, "content": '{"temperature_c": 18}'}
    second = client.chat.completions.create(model=f"ollama/{up}", messages=[user, assistant, tool_result], tools=TOOLS)

    assert second.choices[0].message.content == "It is 18°C in Paris."
    assert second.choices[0].finish_reason == "stop"

    rec1, rec2 = mocks.ollama.requests_for(up)
    assert rec1.body["tools"] == TOOLS  # Ollama takes OpenAI-shaped tool definitions
    sent = rec2.body["messages"]
    assert len(sent) == 3
    assert_subset(sent[0], user, "messages[0]")
    # Ollama shape upstream: arguments as a JSON object, not a string.
    assert sent[1]["role"] == "assistant"
    assert sent[1].get("content") in ("", None)
    assert_subset(sent[1]["tool_calls"], [ollama_call], "messages[1].tool_calls")
    assert isinstance(sent[1]["tool_calls"][0]["function"]["arguments"], dict)
    assert_subset(sent[2], {"role": "tool", "content": '{"temperature_c": 18}'}, "messages[2]")


def test_streamed_tool_calls_openrouter(client: openai.OpenAI, mocks: Mocks, unique):
    up = OPENROUTER.upstream_model(unique)
    deltas = [
        [{"index": 0, "id": "call_S1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}],
        [{"index": 0, "function": {"arguments": '{"city": '}}],
        [{"index": 0, "function": {"arguments": '"Paris"}'}}],
        [{"index": 1, "id": "call_S2", "type": "function", "function": {"name": "get_time", "arguments": ""}}],
        [{"index": 1, "function": {"arguments": '{"tz": "Europe/Paris"}'}}],
    ]
    mocks.openrouter.on(up, openai_chat([], prompt_tokens=60, completion_tokens=20, tool_call_deltas=deltas))

    chunks = collect(
        client.chat.completions.create(
            model=f"openrouter/{up}",
            messages=[{"role": "user", "content": "Weather and time in Paris?"}],
            tools=TOOLS,
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    assert chunks[0].choices[0].delta.role == "assistant"
    assert reassemble_tool_calls(chunks) == {
        0: {"id": "call_S1", "type": "function", "name": "get_weather", "arguments": '{"city": "Paris"}'},
        1: {"id": "call_S2", "type": "function", "name": "get_time", "arguments": '{"tz": "Europe/Paris"}'},
    }
    with_choices = [ch for ch in chunks if ch.choices]
    assert with_choices[-1].choices[0].finish_reason == "tool_calls"
    assert all(ch.choices[0].finish_reason is None for ch in with_choices[:-1])
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (60, 20)
    assert mocks.openrouter.only_request_for(up).body["tools"] == TOOLS


def test_streamed_tool_calls_ollama(client: openai.OpenAI, mocks: Mocks, unique):
    up = OLLAMA.upstream_model(unique)
    ollama_call = {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    mocks.ollama.on(up, ollama_chat([], prompt_eval_count=33, eval_count=7, tool_calls=[ollama_call]))

    chunks = collect(
        client.chat.completions.create(
            model=f"ollama/{up}",
            messages=[{"role": "user", "content": "Weather in Paris?"}],
            tools=[WEATHER_TOOL],
            stream=True,
        )
    )

    calls = reassemble_tool_calls(chunks)
    assert list(calls) == [0]
    assert calls[0]["id"] and calls[0]["type"] == "function" and calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris"}
    with_choices = [ch for ch in chunks if ch.choices]
    assert with_choices[-1].choices[0].finish_reason == "tool_calls"


# --- 5. errors as typed SDK exceptions ---------------------------------------------------------

RATE_LIMIT_BODY = {
    "error": {
        "message": "Rate limit exceeded: free-models-per-min",
        "type": "rate_limit_error",
        "param": None,
        "code": "rate_limit_exceeded",
    }
}


@pytest.mark.parametrize(
    "route, stream, retry_after",
    [
        (OPENROUTER, False, "7"),
        (OPENROUTER, True, "7"),
        (OPENROUTER, False, "Wed, 21 Oct 2026 07:28:00 GMT"),
        (OLLAMA, False, "3"),
        (CLOUD, True, "12"),
    ],
    ids=["openrouter", "openrouter_stream", "openrouter_http_date", "ollama", "cloud_stream"],
)
def test_upstream_429_is_rate_limit_error(route: Route, stream: bool, retry_after: str, client: openai.OpenAI, mocks: Mocks, unique):
    up = route.upstream_model(unique)
    mock = route.mock(mocks)
    mock.on(up, http_error(429, RATE_LIMIT_BODY, headers=[("Retry-After", retry_after)]))

    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model=route.to_client(up), messages=MESSAGES, stream=stream)

    e = info.value
    assert e.status_code == 429
    assert e.response.headers.get("retry-after") == retry_after
    assert isinstance(e.body, dict), f"OpenAI-shaped error body expected, got {e.body!r}"
    assert "Rate limit exceeded: free-models-per-min" in e.body["message"]
    assert len(mock.requests_for(up)) == 1, "chatd must not retry on its own"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_unregistered_provider_is_not_found(stream: bool, client: openai.OpenAI, mocks: Mocks):
    seen = {m.name: len(m.requests) for m in mocks.all()}
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="kimi/kimi-for-coding", messages=MESSAGES, stream=stream)
    e = info.value
    assert e.status_code == 404
    assert isinstance(e.body, dict)
    assert "kimi" in e.body["message"]
    assert e.param == "model"
    # OpenAI's code for an unknown model (the native API says provider_not_registered).
    assert e.code == "model_not_found"
    assert {m.name: len(m.requests) for m in mocks.all()} == seen, "nothing may reach an upstream"


@pytest.mark.parametrize("messages", [openai.omit, []], ids=["missing", "empty"])
def test_missing_messages_is_bad_request(messages, client: openai.OpenAI, mocks: Mocks):
    seen = {m.name: len(m.requests) for m in mocks.all()}
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="ollama/qwen3:8b", messages=messages)
    e = info.value
    assert e.status_code == 400
    assert e.param == "messages"
    assert "messages" in e.body["message"]
    assert {m.name: len(m.requests) for m in mocks.all()} == seen


def test_n_greater_than_one_is_bad_request_naming_n(client: openai.OpenAI, mocks: Mocks):
    seen = {m.name: len(m.requests) for m in mocks.all()}
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="ollama/qwen3:8b", messages=MESSAGES, n=2)
    e = info.value
    assert e.status_code == 400
    assert e.param == "n"
    assert re.search(r"\bn\b", e.body["message"]), e.body["message"]
    assert e.body["type"] == "invalid_request_error"
    assert {m.name: len(m.requests) for m in mocks.all()} == seen


def test_n_equal_to_one_is_accepted(client: openai.OpenAI, mocks: Mocks, unique):
    up = OLLAMA.upstream_model(unique)
    mocks.ollama.on(up, ollama_chat(["one"], prompt_eval_count=1, eval_count=1))
    resp = client.chat.completions.create(model=f"ollama/{up}", messages=MESSAGES, n=1)
    assert [c.message.content for c in resp.choices] == ["one"]


def test_tools_on_cloud_generate_are_refused(client: openai.OpenAI, mocks: Mocks, unique):
    """Ollama Cloud's /api/generate has no tools: a 400 rather than silently dropping them."""
    up = CLOUD.upstream_model(unique)
    mocks.cloud.on(up, ollama_generate(["ignored"], prompt_eval_count=1, eval_count=1))
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=f"{up}:cloud", messages=MESSAGES, tools=TOOLS)
    assert "tools" in info.value.body["message"]
    assert mocks.cloud.requests_for(up) == []


SERVER_ERROR_OPENAI = {"error": {"message": "Internal server error (mock)", "type": "server_error", "code": None}}
SERVER_ERROR_OLLAMA = {"error": "llama runner process has terminated (mock)"}


@pytest.mark.parametrize(
    "route, stream, body, expected_text",
    [
        (OPENROUTER, False, SERVER_ERROR_OPENAI, "Internal server error (mock)"),
        (OPENROUTER, True, SERVER_ERROR_OPENAI, "Internal server error (mock)"),
        (OLLAMA, False, SERVER_ERROR_OLLAMA, "llama runner process has terminated (mock)"),
        (OLLAMA, True, SERVER_ERROR_OLLAMA, "llama runner process has terminated (mock)"),
        (CLOUD, False, SERVER_ERROR_OLLAMA, "llama runner process has terminated (mock)"),
    ],
    ids=["openrouter", "openrouter_stream", "ollama", "ollama_stream", "cloud"],
)
def test_upstream_500_is_internal_server_error_502(
    route: Route, stream: bool, body: dict, expected_text: str, client: openai.OpenAI, mocks: Mocks, unique
):
    up = route.upstream_model(unique)
    mock = route.mock(mocks)
    mock.on(up, http_error(500, body))

    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model=route.to_client(up), messages=MESSAGES, stream=stream)

    e = info.value
    assert e.status_code == 502
    assert isinstance(e.body, dict)
    assert expected_text in e.body["message"]
    assert "500" in e.body["message"]
    assert len(mock.requests_for(up)) == 1


# --- 6. models ------------------------------------------------------------------------------


def test_models_list(client: openai.OpenAI, mocks: Mocks):
    page = client.models.list()
    models = list(page)
    ids = [m.id for m in models]

    assert len(ids) == len(set(ids)), f"duplicate ids: {ids}"
    expected = (
        set(TIERS)
        | {f"ollama/{n}" for n in OLLAMA_MODELS}
        | {f"ollama_cloud/{n}" for n in CLOUD_MODELS}
        | {f"openrouter/{m['id']}" for m in OPENROUTER_MODELS}
    )
    assert set(ids) == expected
    assert all(m.object == "model" for m in models)
    by_id = {m.id: m for m in models}
    for m in OPENROUTER_MODELS:
        listed = by_id[f"openrouter/{m['id']}"]
        assert (listed.owned_by, listed.created) == (m["owned_by"], m["created"])

    tags = [r for r in mocks.ollama.requests if r.method == "GET"]
    assert tags and all(r.path == "/api/tags" and "authorization" not in r.headers for r in tags)
    cloud_tags = [r for r in mocks.cloud.requests if r.method == "GET"]
    assert cloud_tags and all(
        r.path == "/api/tags" and r.headers.get("authorization") == f"Bearer {OLLAMA_CLOUD_KEY}" for r in cloud_tags
    )
    or_models = [r for r in mocks.openrouter.requests if r.method == "GET"]
    assert or_models and all(
        r.path == "/v1/models" and r.headers.get("authorization") == f"Bearer {OPENROUTER_KEY}" for r in or_models
    )


def test_listed_model_ids_route_back(client: openai.OpenAI, mocks: Mocks):
    """An id from /v1/models is usable as-is: ``openrouter/anthropic/claude-x`` reaches
    OpenRouter as ``anthropic/claude-x``."""
    ids = [m.id for m in client.models.list()]
    assert "openrouter/anthropic/claude-x" in ids
    mocks.openrouter.on("anthropic/claude-x", openai_chat(["routed back"], prompt_tokens=2, completion_tokens=2))
    before = len(mocks.openrouter.requests_for("anthropic/claude-x"))
    resp = client.chat.completions.create(model="openrouter/anthropic/claude-x", messages=MESSAGES)
    assert resp.choices[0].message.content == "routed back"
    assert len(mocks.openrouter.requests_for("anthropic/claude-x")) == before + 1


def test_models_retrieve(client: openai.OpenAI):
    """``models.retrieve`` finds a tier and a provider model (its id holds slashes and a
    colon); an id that is not listed is the SDK's NotFoundError."""
    tier = next(iter(TIERS))
    assert client.models.retrieve(tier).id == tier
    listed = f"openrouter/{OPENROUTER_MODELS[0]['id']}"
    model = client.models.retrieve(listed)
    assert (model.id, model.owned_by) == (listed, OPENROUTER_MODELS[0]["owned_by"])
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("ollama/no-such-model:1b")
    assert "not in the model list" in caught.value.body["message"]


# --- 7. an upstream failure in the middle of a stream --------------------------------------------


@pytest.mark.parametrize(
    "route, scenario, expected_text",
    [
        (OPENROUTER, openai_stream_error("Partial answer", {"message": "overloaded", "code": 529}), "overloaded"),
        (OLLAMA, ollama_stream_error("Partial answer", "model runner crashed (mock)"), "model runner crashed (mock)"),
    ],
    ids=["openrouter_sse", "ollama_ndjson"],
)
def test_mid_stream_upstream_error_raises_api_error(
    route: Route, scenario: Scenario, expected_text: str, client: openai.OpenAI, mocks: Mocks, unique
):
    up = route.upstream_model(unique)
    mock = route.mock(mocks)
    mock.on(up, scenario)

    stream = client.chat.completions.create(model=route.to_client(up), messages=MESSAGES, stream=True)
    received: list[str] = []
    finish_reasons: list[str] = []
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            for choice in chunk.choices:
                if choice.delta.content:
                    received.append(choice.delta.content)
                if choice.finish_reason:
                    finish_reasons.append(choice.finish_reason)

    assert received == ["Partial answer"], "the content before the failure is delivered first"
    assert finish_reasons == [], "a failed stream must not claim a normal finish"
    assert expected_text in info.value.message
    assert len(mock.requests_for(up)) == 1
