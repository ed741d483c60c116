"""chatd's Anthropic Messages API (``POST /v1/messages``, ``/v1/messages/count_tokens``)
through the official ``anthropic`` SDK, against mock upstreams.

Each test runs through an ``ollama``-adapter provider and an ``openai_compat`` one and checks
both sides: what the SDK parsed out of chatd's answer, and what the upstream was asked for in
its own dialect. The request shapes Claude Code sends (observed on the wire: a ``system`` role
inside ``messages``, ``?beta=true``, ``x-api-key``, beta headers, thinking blocks sent back,
``context_management``, deferred tools) have their own test, since an agent that meets a 400
retries with fewer features and then gives up.
"""

from __future__ import annotations

import json

import anthropic
import httpx
import pytest

from harness import Mocks, sse_events
from mock_upstream import (
    ollama_chat,
    ollama_stream_error,
    openai_chat,
    openai_stream_error,
    upstream_images,
    upstream_messages,
    upstream_schema,
    upstream_tool_names,
)
from providers import OLLAMA, OPENROUTER, PROVIDER_IDS, PROVIDERS, UNREGISTERED_MODEL, Provider, requests_seen

SYSTEM = "You are terse."
QUESTION = "What is the capital of France?"
USER = {"role": "user", "content": QUESTION}
PIECES = ["The capital ", "of France ", "is Paris."]
ANSWER = "".join(PIECES)

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city"],
}
WEATHER_TOOL = {"name": "get_weather", "description": "Current weather for a city", "input_schema": WEATHER_SCHEMA}
WEATHER_ARGS = {"city": "Paris", "unit": "celsius"}

# A 1×1 transparent PNG.
PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="


def upstream_call_id(p: Provider) -> str | None:
    """The id the upstream gives its tool call: OpenAI-style upstreams name them, Ollama not."""
    return "call_Wx1" if p.dialect == "openai" else None


# --- answers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("p", PROVIDERS, ids=PROVIDER_IDS)
def test_create(p: Provider, anthropic_client: anthropic.Anthropic, mocks: Mocks, unique):
    up = p.upstream_model(unique)
    mock = p.mock(mocks)
    mock.on(up, p.answer(PIECES, prompt=17, completion=9))

    raw = anthropic_client.messages.with_raw_response.create(
        model=p.client_model(up), max_tokens=64, system=SYSTEM, messages=[USER]
    )

    assert raw.headers.get("x-chatd-provider") == p.id
    msg = raw.parse()
    assert (msg.type, msg.role) == ("message", "assistant")
    assert isinstance(msg.id, str) and msg.id
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text == ANSWER
    assert msg.stop_reason == "end_turn"
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (17, 9)

    rec = mock.only_request_for(up)  # the routing prefix is gone upstream
    assert (rec.method, rec.path) == ("POST", p.chat_path)
    p.check_auth(rec)
    assert not p.streamed(rec)
    assert [(m["role"], m["content"]) for m in upstream_messages(rec.body)] == [("system", SYSTEM), ("user", QUESTION)]
    assert p.max_tokens(rec.body) == 64


@pytest.mark.parametrize("p", PROVIDERS, ids=PROVIDER_IDS)
def test_system_as_text_blocks(p: Provider, anthropic_client: anthropic.Anthropic, mocks: Mocks, unique):
    """``system`` as a list of text blocks (with ``cache_control``, as agents send it) is one
    system prompt upstream."""
    up = p.upstream_model(unique)
    mock = p.mock(mocks)
    mock.on(up, p.answer(["ok"], prompt=5, completion=1))

    msg = anthropic_client.messages.create(
        model=p.client_model(up),
        max_tokens=16,
        system=[
            {"type": "text", "text": "You are terse."},
            {"type": "text", "text": "Answer in English.", "cache_control": {"type": "ephemeral"}},
        ],
        messages=[{"role": "user", "content": [{"type": "text", "text": QUESTION, "cache_control": {"type": "ephemeral"}}]}],
    )

    assert msg.content[0].text == "ok"
    sent = upstream_messages(mock.only_request_for(up).body)
    system_text = "\n".join(m["content"] for m in sent if m["role"] == "system")
    assert "You are terse." in system_text and "Answer in English." in system_text
    assert [m for m in sent if m["role"] == "user"][0]["content"] == QUESTION


@pytest.mark.parametrize("p", PROVIDERS, ids=PROVIDER_IDS)
def test_stream(p: Provider, anthropic_client: anthropic.Anthropic, mocks: Mocks, unique):
    up = p.upstream_model(unique)
    mock = p.mock(mocks)
    mock.on(up, p.answer(PIECES, prompt=23, completion=11))

    with anthropic_client.messages.stream(
        model=p.client_model(up), max_tokens=64, system=SYSTEM, messages=[USER]
    ) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()

    assert texts == PIECES, "each upstream piece is forwarded as it arrives"
    assert [b.type for b in final.content] == ["text"]
    assert final.content[0].text == ANSWER
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (23, 11)

    rec = mock.only_request_for(up)
    assert p.streamed(rec)
    assert [(m["role"], m["content"]) for m in upstream_messages(rec.body)] == [("system", SYSTEM), ("user", QUESTION)]


def check_event_sequence(events: list[tuple[str | None, str]]) -> list[dict]:
    """The Anthropic stream grammar: every event named by an ``event:`` line equal to its data's
    ``type`` (the SDK and Claude Code drop or refuse unnamed ones), ``message_start`` first,
    content blocks opened and closed in index order, ``message_delta`` with the stop reason,
    ``message_stop`` last; ``ping`` anywhere after the start. Returns the data objects."""
    datas = []
    for name, data in events:
        obj = json.loads(data)
        assert name is not None, f"SSE event without an event: line: {data}"
        assert name == obj["type"], f"event: {name} but data type {obj['type']}"
        datas.append(obj)
    kinds = [d["type"] for d in datas if d["type"] != "ping"]
    assert kinds[0] == "message_start" and datas[0]["type"] == "message_start"
    assert kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds.count("message_start") == kinds.count("message_delta") == kinds.count("message_stop") == 1
    open_index = None
    next_index = 0
    for d in datas[1:]:
        if d["type"] in ("ping", "message_delta", "message_stop"):
            continue
        if d["type"] == "content_block_start":
            assert open_index is None and d["index"] == next_index
            open_index = d["index"]
        elif d["type"] == "content_block_delta":
            assert d["index"] == open_index
        elif d["type"] == "content_block_stop":
            assert d["index"] == open_index
            open_index, next_index = None, next_index + 1
        else:
            raise AssertionError(f"unexpected event {d['type']} inside the message")
    assert open_index is None, "a content block was never closed"
    start = datas[0]["message"]
    assert (start["type"], start["role"], start["content"]) == ("message", "assistant", [])
    return datas


@pytest.mark.parametrize("p", PROVIDERS, ids=PROVIDER_IDS)
def test_stream_wire_format(p: Provider, http: httpx.Client, mocks: Mocks, unique):
    """The raw SSE as Claude Code reads it."""
    up = p.upstream_model(unique)
    p.mock(mocks).on(up, p.answer(PIECES, prompt=23, completion=11))

    resp = http.post(
        "/v1/messages",
        json={"model": p.client_model(up), "max_tokens": 64, "stream": True, "messages": [USER]},
        headers={"anthropic-version": "2023-06-01"},
    )

    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/event-stream")
    assert resp.headers.get("x-chatd-provider") == p.id
    datas = check_event_sequence(sse_events(resp.text))
    blocks = [d for d in datas if d["type"] == "content_block_start"]
    assert [b["content_block"]["type"] for b in blocks] == ["text"]
    text = "".join(d["delta"]["text"] for d in datas if d["type"] == "content_block_delta")
    assert text == ANSWER
    delta = next(d for d in datas if d["type"] == "message_delta")
    assert delta["delta"]["stop_reason"] == "end_turn"
    assert delta["usage"]["output_tokens"] == 11


# --- tools ----------------------------------------------------------------------------------


@pytest.mark.parametrize("p", PROVIDERS, ids=PROVIDER_IDS)
def test_tool_use_round_trip(p: Provider, anthropic_client: anthropic.Anthropic, mocks: Mocks, unique):
    up = p.upstream_model(unique)
    mock = p.mock(mocks)
    mock.on(
        up,
        p.answer([], prompt=50, completion=12, tool_calls=[(upstream_call_id(p), "get_weather", WEATHER_ARGS)]),
        p.answer(["It is 18°C in Paris."], prompt=80, completion=8),
    )
    user = {"role": "user", "content": "Weather in Paris?"}

    first = anthropic_client.messages.create(
        model=p.client_model(up), max_tokens=64, messages=[user], tools=[WEATHER_TOOL], tool_choice={"type": "auto"}
    )

    assert first.stop_reason == "tool_use"
    uses = [b for b in first.content if b.type == "tool_use"]
    assert len(uses) == 1
    use = uses[0]
    assert use.name == "get_weather"
    assert use.input == WEATHER_ARGS, "tool input is an object, not a JSON string"
    assert isinstance(use.id, str) and use.id
    assert all(b.text for b in first.content if b.type == "text"), "no empty text blocks"
    assert (first.usage.input_tokens, first.usage.output_tokens) == (50, 12)

    second = anthropic_client.messages.create(
        model=p.client_model(up),
        max_tokens=64,
        tools=[WEATHER_TOOL],
        messages=[
            user,
            {"role": "assistant", "content": first.content},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18°C"}]},
        ],
    )

    assert [b.type for b in second.content] == ["text"]
    assert second.content[0].text == "It is 18°C in Paris."
    assert second.stop_reason == "end_turn"

    rec1, rec2 = mock.requests_for(up)
    assert upstream_tool_names(rec1.body) == ["get_weather"]
    assert rec1.body["tools"][0]["function"]["parameters"] == WEATHER_SCHEMA
    sent = upstream_messages(rec2.body)
    assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
    assert sent[0]["content"] == "Weather in Paris?"
    (call_id, name, args), = sent[1]["tool_calls"]
    assert (name, args) == ("get_weather", WEATHER_ARGS)
    assert sent[2]["content"] == "18°C"
    if p.dialect == "openai":
        # OpenAI-style upstreams pair the result with its call by id.
        assert call_id and sent[2]["tool_call_id"] == call_id


@pytest.mark.parametrize("p", PROVIDERS, ids=PROVIDER_IDS)
def test_streamed_tool_use(p: Provider, anthropic_client: anthropic.Anthropic, http: httpx.Client, mocks: Mocks, unique):
    """The SDK's accumulator rebuilds the input; on the wire the input arrives as
    ``input_json_delta`` pieces after a ``tool_use`` block that starts with ``input: {}`` —
    Claude Code ignores an input given whole in ``content_block_start`` and runs the tool with
    no arguments."""
    up = p.upstream_model(unique)
    p.mock(mocks).on(up, p.answer(["Checking. "], prompt=33, completion=7, tool_calls=[(upstream_call_id(p), "get_weather", WEATHER_ARGS)]))
    request = {"model": p.client_model(up), "max_tokens": 64, "messages": [{"role": "user", "content": "Weather?"}], "tools": [WEATHER_TOOL]}

    with anthropic_client.messages.stream(**request) as stream:
        final = stream.get_final_message()

    assert final.stop_reason == "tool_use"
    assert [b.type for b in final.content] == ["text", "tool_use"]
    assert final.content[0].text == "Checking. "
    assert (final.content[1].name, final.content[1].input) == ("get_weather", WEATHER_ARGS)

    resp = http.post("/v1/messages", json={**request, "stream": True})
    assert resp.status_code == 200, resp.text
    datas = check_event_sequence(sse_events(resp.text))
    start = next(d for d in datas if d["type"] == "content_block_start" and d["content_block"]["type"] == "tool_use")
    assert start["content_block"]["input"] == {}
    assert start["content_block"]["name"] == "get_weather" and start["content_block"]["id"]
    pieces = [d["delta"]["partial_json"] for d in datas if d["type"] == "content_block_delta" and d["index"] == start["index"]]
    assert pieces and all(isinstance(x, str) for x in pieces)
    assert json.loads("".join(pieces)) == WEATHER_ARGS
    assert next(d for d in datas if d["type"] == "message_delta")["delta"]["stop_reason"] == "tool_use"


# Claude Code 2.1's turn after running a tool, trimmed: its headers and every field it sends.
CLAUDE_CODE_BETAS = (
    "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27,"
    "mid-conversation-tool-changes-2026-07-01,thinking-token-count-2026-05-13,"
    "advanced-tool-use-2025-11-20,effort-2025-11-24,thinking-display-updates-2026-08-18"
)
BASH_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "command": {"description": "The command to execute", "type": "string"},
        "timeout": {"description": "Optional timeout in milliseconds", "type": "number"},
        "description": {"description": "What this command does", "type": "string"},
    },
    "required": ["command"],
    "additionalProperties": False,
}


def claude_code_turn(model: str) -> dict:
    return {
        "model": model,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "<system-reminder>\nAttribution guidance.\n</system-reminder>"},
                    {"type": "text", "text": "Run echo hi > out.txt, then say done."},
                ],
            },
            # Claude Code puts its environment block here, as a system turn inside messages.
            {"role": "system", "content": "# Environment\n - Primary working directory: /w\n - Platform: linux"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "The user wants a file.", "signature": ""},
                    {"type": "text", "text": "I'll run the command."},
                    {"type": "tool_use", "id": "toolu_01A", "name": "Bash", "input": {"command": "echo hi > out.txt", "description": "Write hi"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"tool_use_id": "toolu_01A", "type": "tool_result", "content": "(Bash completed with no output)",
                     "is_error": False, "cache_control": {"type": "ephemeral"}},
                ],
            },
        ],
        "system": [
            {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.332.31a; cc_entrypoint=sdk-cli;"},
            {"type": "text", "text": "You are a Claude agent, built on Anthropic's Claude Agent SDK.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "\nYou are an agent working with the user toward their goals.", "cache_control": {"type": "ephemeral"}},
        ],
        "tools": [
            {"name": "Bash", "description": "Executes a bash command and returns its output.", "input_schema": BASH_SCHEMA},
            {"name": "DeferredToolPlaceholder", "description": "Reserved placeholder.", "defer_loading": True,
             "input_schema": {"type": "object", "properties": {}}},
        ],
        "metadata": {"user_id": json.dumps({"device_id": "d3v1c3", "account_uuid": "", "session_id": "s3ss10n"})},
        "max_tokens": 32000,
        "thinking": {"type": "adaptive", "display": "updates"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "output_config": {"effort": "high"},
        "stream": True,
    }


@pytest.mark.parametrize("p", PROVIDERS, ids=PROVIDER_IDS)
def test_claude_code_request_is_served(p: Provider, http: httpx.Client, mocks: Mocks, unique):
    up = p.upstream_model(unique)
    mock = p.mock(mocks)
    mock.on(up, p.answer(["Done: ", "out.txt holds hi."], prompt=900, completion=9))

    resp = http.post(
        "/v1/messages?beta=true",
        json=claude_code_turn(p.client_model(up)),
        headers={
            "x-api-key": "sk-ant-unused",
            "anthropic-version": "2023-06-01",
            "anthropic-beta": CLAUDE_CODE_BETAS,
            "anthropic-dangerous-direct-browser-access": "true",
            "x-app": "cli",
            "user-agent": "claude-cli/2.1.332 (external, sdk-cli)",
        },
    )

    assert resp.status_code == 200, resp.text
    datas = check_event_sequence(sse_events(resp.text))
    text = "".join(d["delta"].get("text", "") for d in datas if d["type"] == "content_block_delta")
    assert text == "Done: out.txt holds hi."
    assert next(d for d in datas if d["type"] == "message_delta")["delta"]["stop_reason"] == "end_turn"

    rec = mock.only_request_for(up)
    assert p.streamed(rec)
    sent = upstream_messages(rec.body)
    system_text = "\n".join(m["content"] for m in sent if m["role"] == "system")
    assert "You are a Claude agent" in system_text
    assert "# Environment" in system_text, "the system turn inside messages reaches the upstream"
    users = [m for m in sent if m["role"] == "user"]
    assert "Run echo hi > out.txt, then say done." in users[0]["content"]
    assistant = next(m for m in sent if m["role"] == "assistant")
    assert [(n, a) for _, n, a in assistant["tool_calls"]] == [("Bash", {"command": "echo hi > out.txt", "description": "Write hi"})]
    tool = next(m for m in sent if m["role"] == "tool")
    assert tool["content"] == "(Bash completed with no output)"
    if p.dialect == "openai":
        assert tool["tool_call_id"] == assistant["tool_calls"][0][0]
    assert "Bash" in upstream_tool_names(rec.body)
    # Anthropic-only fields stay at the gateway.
    for field in ("context_management", "output_config", "defer_loading", "clear_thinking_20251015"):
        assert field not in json.dumps(rec.body), f"{field} leaked upstream"


# --- images and structured output -----------------------------------------------------------


@pytest.mark.parametrize("p", PROVIDERS, ids=PROVIDER_IDS)
def test_image_block_reaches_upstream(p: Provider, anthropic_client: anthropic.Anthropic, mocks: Mocks, unique):
    up = p.upstream_model(unique)
    mock = p.mock(mocks)
    mock.on(up, p.answer(["A transparent pixel."], prompt=70, completion=4))

    msg = anthropic_client.messages.create(
        model=p.client_model(up),
        max_tokens=32,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this picture?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}},
                ],
            }
        ],
    )

    assert msg.content[0].text == "A transparent pixel."
    body = mock.only_request_for(up).body
    expected_type = "image/png" if p.dialect == "openai" else None  # Ollama takes bare base64
    assert upstream_images(body) == [(expected_type, PNG_B64)]
    assert upstream_messages(body)[-1]["content"] == "What is in this picture?"


@pytest.mark.parametrize("p", PROVIDERS, ids=PROVIDER_IDS)
def test_json_schema_output(p: Provider, anthropic_client: anthropic.Anthropic, mocks: Mocks, unique):
    up = p.upstream_model(unique)
    mock = p.mock(mocks)
    mock.on(up, p.answer(['{"capital": ', '"Paris"}'], prompt=30, completion=6))
    schema = {"type": "object", "properties": {"capital": {"type": "string"}}, "required": ["capital"], "additionalProperties": False}

    msg = anthropic_client.messages.create(
        model=p.client_model(up),
        max_tokens=64,
        messages=[{"role": "user", "content": "Capital of France as JSON"}],
        output_config={"format": {"type": "json_schema", "schema": schema}},
    )

    assert json.loads(msg.content[0].text) == {"capital": "Paris"}
    assert upstream_schema(mock.only_request_for(up).body) == schema


# --- routing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tier, mock_name, upstream_model, answer",
    [
        ("fast", "ollama", "qwen3:8b", ollama_chat(["tier answer"], prompt_eval_count=3, eval_count=2)),
        ("smart", "openrouter", "anthropic/claude-x", openai_chat(["tier answer"], prompt_tokens=3, completion_tokens=2)),
    ],
    ids=["fast_to_ollama", "smart_to_openrouter"],
)
def test_tier_names_route(tier, mock_name, upstream_model, answer, anthropic_client: anthropic.Anthropic, mocks: Mocks):
    mock = getattr(mocks, mock_name)
    mock.on(upstream_model, answer)
    before = len(mock.requests_for(upstream_model))

    msg = anthropic_client.messages.create(model=tier, max_tokens=16, messages=[USER])

    assert msg.content[0].text == "tier answer"
    assert len(mock.requests_for(upstream_model)) == before + 1


# --- count_tokens ---------------------------------------------------------------------------


@pytest.mark.parametrize("p", PROVIDERS, ids=PROVIDER_IDS)
def test_count_tokens(p: Provider, anthropic_client: anthropic.Anthropic, mocks: Mocks, unique):
    """A count for the request as it would be sent: more text, more tokens. (Whether chatd
    estimates it or asks the upstream, the mock's counts grow the same way.)"""
    up = p.upstream_model(unique)
    p.mock(mocks).on(up, p.answer(["x"], prompt=12, completion=1), p.answer(["x"], prompt=400, completion=1))
    short = anthropic_client.messages.count_tokens(model=p.client_model(up), messages=[{"role": "user", "content": "hi"}])
    long = anthropic_client.messages.count_tokens(
        model=p.client_model(up),
        system=SYSTEM,
        messages=[{"role": "user", "content": " ".join(["The quick brown fox jumps over the lazy dog."] * 40)}],
        tools=[WEATHER_TOOL],
    )
    assert isinstance(short.input_tokens, int) and short.input_tokens > 0
    assert long.input_tokens > short.input_tokens


def test_count_tokens_unregistered_provider(anthropic_client: anthropic.Anthropic, mocks: Mocks):
    seen = requests_seen(mocks)
    with pytest.raises(anthropic.NotFoundError) as info:
        anthropic_client.messages.count_tokens(model=UNREGISTERED_MODEL, messages=[USER])
    assert info.value.type == "not_found_error"
    assert requests_seen(mocks) == seen


# --- errors as the SDK's typed exceptions ----------------------------------------------------


def check_error_body(e: anthropic.APIStatusError, error_type: str) -> None:
    assert isinstance(e.body, dict), f"Anthropic-shaped JSON error expected, got {e.body!r}"
    assert e.body.get("type") == "error"
    assert e.body["error"]["type"] == error_type
    assert isinstance(e.body["error"]["message"], str) and e.body["error"]["message"]
    assert e.type == error_type


@pytest.mark.parametrize(
    "model, messages, named",
    [("ollama/", [USER], "model"), ("ollama/qwen3:8b", [], "messages")],
    ids=["no_model_after_prefix", "empty_messages"],
)
def test_bad_request(model, messages, named, anthropic_client: anthropic.Anthropic, mocks: Mocks):
    seen = requests_seen(mocks)
    with pytest.raises(anthropic.BadRequestError) as info:
        anthropic_client.messages.create(model=model, max_tokens=16, messages=messages)
    e = info.value
    assert e.status_code == 400
    check_error_body(e, "invalid_request_error")
    assert named in e.api_message
    assert requests_seen(mocks) == seen


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_unregistered_provider_is_not_found(stream: bool, anthropic_client: anthropic.Anthropic, mocks: Mocks):
    seen = requests_seen(mocks)
    with pytest.raises(anthropic.NotFoundError) as info:
        anthropic_client.messages.create(model=UNREGISTERED_MODEL, max_tokens=16, messages=[USER], stream=stream)
    e = info.value
    assert e.status_code == 404
    check_error_body(e, "not_found_error")
    assert "kimi" in e.api_message
    assert requests_seen(mocks) == seen, "nothing may reach an upstream"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("p", PROVIDERS, ids=PROVIDER_IDS)
def test_upstream_429_is_rate_limit_error(p: Provider, stream: bool, anthropic_client: anthropic.Anthropic, mocks: Mocks, unique):
    up = p.upstream_model(unique)
    mock = p.mock(mocks)
    mock.on(up, p.error(429, "Rate limit exceeded: free-models-per-min", retry_after="7"))

    with pytest.raises(anthropic.RateLimitError) as info:
        anthropic_client.messages.create(model=p.client_model(up), max_tokens=16, messages=[USER], stream=stream)

    e = info.value
    assert e.status_code == 429
    check_error_body(e, "rate_limit_error")
    assert "Rate limit exceeded: free-models-per-min" in e.api_message
    assert e.response.headers.get("retry-after") == "7"
    assert len(mock.requests_for(up)) == 1, "chatd must not retry on its own"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("p", PROVIDERS, ids=PROVIDER_IDS)
def test_upstream_500_is_internal_server_error(p: Provider, stream: bool, anthropic_client: anthropic.Anthropic, mocks: Mocks, unique):
    up = p.upstream_model(unique)
    mock = p.mock(mocks)
    mock.on(up, p.error(500, "model runner crashed (mock)"))

    with pytest.raises(anthropic.InternalServerError) as info:
        anthropic_client.messages.create(model=p.client_model(up), max_tokens=16, messages=[USER], stream=stream)

    e = info.value
    assert e.status_code == 502
    check_error_body(e, "api_error")
    assert "model runner crashed (mock)" in e.api_message
    assert "500" in e.api_message
    assert len(mock.requests_for(up)) == 1


@pytest.mark.parametrize(
    "p, scenario",
    [
        (OLLAMA, ollama_stream_error("Partial answer", "model runner crashed (mock)")),
        (OPENROUTER, openai_stream_error("Partial answer", {"message": "model runner crashed (mock)", "code": 502})),
    ],
    ids=PROVIDER_IDS,
)
def test_mid_stream_failure_is_an_error_event(p: Provider, scenario, anthropic_client: anthropic.Anthropic, mocks: Mocks, unique):
    """After streaming began the failure is an ``event: error`` (the SDK raises it), never a
    normal ``message_stop``."""
    up = p.upstream_model(unique)
    p.mock(mocks).on(up, scenario)

    received: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as info:
        with anthropic_client.messages.stream(model=p.client_model(up), max_tokens=16, messages=[USER]) as stream:
            for text in stream.text_stream:
                received.append(text)

    assert received == ["Partial answer"], "the content before the failure is delivered first"
    e = info.value
    assert e.type in ("api_error", "overloaded_error")
    assert "model runner crashed (mock)" in e.api_message
