"""chatd's OpenAI Responses API (``POST /v1/responses``, stateless) through the official
``openai`` SDK, against mock upstreams.

Each test runs through an ``ollama``-adapter provider and an ``openai_compat`` one. What Codex
needs (observed on the wire) has its own tests: it reads each output item only from
``response.output_item.done``, needs ``response.completed`` to end a turn, reports
``response.failed``, and sends developer messages, item ids, reasoning settings and tool types
beyond ``function`` that must not cost it a 400.
"""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from harness import Mocks, sse_events
from mock_upstream import (
    ollama_stream_error,
    openai_stream_error,
    upstream_images,
    upstream_messages,
    upstream_schema,
    upstream_tool_names,
)
from providers import OLLAMA, OPENROUTER, PROVIDER_IDS, PROVIDERS, UNREGISTERED_MODEL, Provider, requests_seen

SYSTEM = "You are terse."
QUESTION = "What is the capital of France?"
PIECES = ["The capital ", "of France ", "is Paris."]
ANSWER = "".join(PIECES)

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city"],
}
WEATHER_TOOL = {"type": "function", "name": "get_weather", "description": "Current weather for a city", "parameters": WEATHER_SCHEMA}
WEATHER_ARGS = {"city": "Paris", "unit": "celsius"}
PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="


def upstream_call_id(p: Provider) -> str | None:
    return "call_Wx1" if p.dialect == "openai" else None


# --- answers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("p", PROVIDERS, ids=PROVIDER_IDS)
def test_create_with_instructions(p: Provider, client: openai.OpenAI, mocks: Mocks, unique):
    up = p.upstream_model(unique)
    mock = p.mock(mocks)
    mock.on(up, p.answer(PIECES, prompt=17, completion=9))

    raw = client.responses.with_raw_response.create(
        model=p.client_model(up), instructions=SYSTEM, input=QUESTION, max_output_tokens=64
    )

    assert raw.headers.get("x-chatd-provider") == p.id
    r = raw.parse()
    assert (r.object, r.status) == ("response", "completed")
    assert isinstance(r.id, str) and r.id
    assert r.output_text == ANSWER
    assert [item.type for item in r.output] == ["message"]
    message = r.output[0]
    assert message.role == "assistant"
    assert [(c.type, c.text) for c in message.content] == [("output_text", ANSWER)]
    assert (r.usage.input_tokens, r.usage.output_tokens, r.usage.total_tokens) == (17, 9, 26)

    rec = mock.only_request_for(up)
    assert (rec.method, rec.path) == ("POST", p.chat_path)
    p.check_auth(rec)
    assert not p.streamed(rec)
    assert [(m["role"], m["content"]) for m in upstream_messages(rec.body)] == [("system", SYSTEM), ("user", QUESTION)]
    assert p.max_tokens(rec.body) == 64


@pytest.mark.parametrize("p", PROVIDERS, ids=PROVIDER_IDS)
def test_input_items(p: Provider, client: openai.OpenAI, mocks: Mocks, unique):
    """``input`` as items: ``developer`` is a system turn, an earlier assistant answer comes
    back as ``output_text`` parts, user content as ``input_text`` parts or a plain string."""
    up = p.upstream_model(unique)
    mock = p.mock(mocks)
    mock.on(up, p.answer(["Lyon."], prompt=40, completion=2))

    r = client.responses.create(
        model=p.client_model(up),
        input=[
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": SYSTEM}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": QUESTION}]},
            {"type": "message", "role": "assistant", "id": "msg_prev1", "status": "completed",
             "content": [{"type": "output_text", "text": "Paris.", "annotations": []}]},
            {"role": "user", "content": "And the second largest city?"},
        ],
    )

    assert r.output_text == "Lyon."
    sent = upstream_messages(mock.only_request_for(up).body)
    assert [(m["role"], m["content"]) for m in sent] == [
        ("system", SYSTEM),
        ("user", QUESTION),
        ("assistant", "Paris."),
        ("user", "And the second largest city?"),
    ]


@pytest.mark.parametrize("p", PROVIDERS, ids=PROVIDER_IDS)
def test_stream_events(p: Provider, client: openai.OpenAI, mocks: Mocks, unique):
    up = p.upstream_model(unique)
    mock = p.mock(mocks)
    mock.on(up, p.answer(PIECES, prompt=23, completion=11))

    events = list(client.responses.create(model=p.client_model(up), instructions=SYSTEM, input=QUESTION, stream=True))

    types = [e.type for e in events]
    assert types[0] == "response.created"
    assert types[-1] == "response.completed"
    numbers = [e.sequence_number for e in events]
    assert numbers == sorted(set(numbers)), "sequence_number strictly increases"
    assert [e.delta for e in events if e.type == "response.output_text.delta"] == PIECES
    added = next(e for e in events if e.type == "response.output_item.added")
    assert added.item.type == "message"
    # The SDK's stream helper appends text to the part content_part.added opened (IndexError
    # without it), in the item output_item.added opened.
    first_delta = types.index("response.output_text.delta")
    assert types.index("response.output_item.added") < types.index("response.content_part.added") < first_delta
    done_text = next(e for e in events if e.type == "response.output_text.done")
    assert done_text.text == ANSWER
    # Codex takes each item from output_item.done, nothing else.
    item_done = [e for e in events if e.type == "response.output_item.done"]
    assert len(item_done) == 1
    item = item_done[0].item
    assert (item.type, item.role, item.id) == ("message", "assistant", added.item.id)
    assert [(c.type, c.text) for c in item.content] == [("output_text", ANSWER)]
    final = events[-1].response
    assert final.status == "completed"
    assert final.output_text == ANSWER
    assert (final.usage.input_tokens, final.usage.output_tokens, final.usage.total_tokens) == (23, 11, 34)
    assert p.streamed(mock.only_request_for(up))


@pytest.mark.parametrize("p", PROVIDERS, ids=PROVIDER_IDS)
def test_stream_helper(p: Provider, client: openai.OpenAI, mocks: Mocks, unique):
    up = p.upstream_model(unique)
    p.mock(mocks).on(up, p.answer(PIECES, prompt=5, completion=3))

    with client.responses.stream(model=p.client_model(up), input=QUESTION) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()

    assert deltas == PIECES
    assert final.output_text == ANSWER
    assert (final.usage.input_tokens, final.usage.output_tokens) == (5, 3)


# --- function calling -------------------------------------------------------------------------


@pytest.mark.parametrize("p", PROVIDERS, ids=PROVIDER_IDS)
def test_function_call_round_trip(p: Provider, client: openai.OpenAI, mocks: Mocks, unique):
    up = p.upstream_model(unique)
    mock = p.mock(mocks)
    mock.on(
        up,
        p.answer([], prompt=50, completion=12, tool_calls=[(upstream_call_id(p), "get_weather", WEATHER_ARGS)]),
        p.answer(["It is 18°C in Paris."], prompt=80, completion=8),
    )

    first = client.responses.create(model=p.client_model(up), input="Weather in Paris?", tools=[WEATHER_TOOL])

    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1
    call = calls[0]
    assert call.name == "get_weather"
    assert json.loads(call.arguments) == WEATHER_ARGS, "arguments are a JSON string"
    assert isinstance(call.call_id, str) and call.call_id
    assert first.output_text == ""
    assert (first.usage.input_tokens, first.usage.output_tokens) == (50, 12)

    second = client.responses.create(
        model=p.client_model(up),
        tools=[WEATHER_TOOL],
        input=[
            {"role": "user", "content": "Weather in Paris?"},
            call.model_dump(exclude_none=True),
            {"type": "function_call_output", "call_id": call.call_id, "output": "18°C"},
        ],
    )

    assert second.output_text == "It is 18°C in Paris."
    assert [item.type for item in second.output] == ["message"]

    rec1, rec2 = mock.requests_for(up)
    assert upstream_tool_names(rec1.body) == ["get_weather"]
    assert rec1.body["tools"][0]["function"]["parameters"] == WEATHER_SCHEMA
    sent = upstream_messages(rec2.body)
    assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
    (call_id, name, args), = sent[1]["tool_calls"]
    assert (name, args) == ("get_weather", WEATHER_ARGS)
    assert sent[2]["content"] == "18°C"
    if p.dialect == "openai":
        assert call_id and sent[2]["tool_call_id"] == call_id


@pytest.mark.parametrize("p", PROVIDERS, ids=PROVIDER_IDS)
def test_streamed_function_call(p: Provider, client: openai.OpenAI, mocks: Mocks, unique):
    """The events Codex runs a tool from: the call's ``output_item.added``, its argument
    deltas, and above all its ``output_item.done`` with the whole call."""
    up = p.upstream_model(unique)
    p.mock(mocks).on(up, p.answer([], prompt=33, completion=7, tool_calls=[(upstream_call_id(p), "get_weather", WEATHER_ARGS)]))

    events = list(client.responses.create(model=p.client_model(up), input="Weather?", tools=[WEATHER_TOOL], stream=True))

    types = [e.type for e in events]
    assert types[0] == "response.created" and types[-1] == "response.completed"
    added = next(e for e in events if e.type == "response.output_item.added" and e.item.type == "function_call")
    assert added.item.name == "get_weather"
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta" and e.item_id == added.item.id)
    assert json.loads(deltas) == WEATHER_ARGS
    done = [e for e in events if e.type == "response.output_item.done" and e.item.type == "function_call"]
    assert len(done) == 1
    item = done[0].item
    assert (item.id, item.name) == (added.item.id, "get_weather")
    assert json.loads(item.arguments) == WEATHER_ARGS
    assert item.call_id
    final = events[-1].response
    assert [o.type for o in final.output] == ["function_call"]
    assert final.output[0].call_id == item.call_id


# Codex 0.171's second request of a turn, trimmed: every field and item kind it sends.
def codex_turn(model: str) -> dict:
    exec_command = {
        "type": "function",
        "name": "exec_command",
        "description": "Runs a command in a PTY, returning output or a session ID for ongoing interaction.",
        "strict": False,
        "parameters": {
            "type": "object",
            "properties": {"cmd": {"type": "string", "description": "Shell command to execute."},
                           "workdir": {"type": "string"}, "yield_time_ms": {"type": "number"}},
            "required": ["cmd"],
            "additionalProperties": False,
        },
    }
    return {
        "model": model,
        "stream": True,
        "input": [
            {"type": "message", "id": "msg_dev1", "role": "developer",
             "content": [{"type": "input_text", "text": "You are a coding agent running in the Codex CLI."}]},
            {"type": "message", "id": "msg_env1", "role": "user",
             "content": [{"type": "input_text", "text": "<environment_context>\n  <cwd>/w</cwd>\n</environment_context>"}]},
            {"type": "message", "id": "msg_usr1", "role": "user",
             "content": [{"type": "input_text", "text": "Run echo hi > out.txt, then say done."}]},
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Run it."}],
             "content": None, "encrypted_content": "ZW5jcnlwdGVk"},
            {"type": "function_call", "status": "completed", "id": "fc_1", "name": "exec_command",
             "arguments": "{\"cmd\": \"echo hi > out.txt\"}", "call_id": "call_X1"},
            {"type": "function_call_output", "id": "fco_1", "call_id": "call_X1",
             "output": "Process exited with code 0\nOutput:\n"},
        ],
        "tools": [
            exec_command,
            {"type": "custom", "name": "apply_patch", "description": "Edit files. This is a FREEFORM tool.",
             "format": {"type": "grammar", "syntax": "lark", "definition": "start: begin_patch hunk+ end_patch"}},
            {"type": "namespace", "name": "multi_agent_v1", "description": "Sub-agents.",
             "tools": [{"type": "function", "name": "close_agent", "description": "Close an agent.", "strict": False,
                        "parameters": {"type": "object", "properties": {"target": {"type": "string"}}, "required": ["target"]}}]},
            {"type": "tool_search", "execution": "client", "description": "Tool discovery.",
             "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}},
            {"type": "web_search", "external_web_access": True, "search_content_types": ["text", "image"]},
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "reasoning": {"effort": "medium"},
        "store": False,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "01a23d34-70d8-7d70-9cca-378c8c3b2d0f",
        "text": {"verbosity": "low"},
        "client_metadata": {"turn_id": "t1", "x-codex-turn-metadata": "{\"sandbox\":\"none\"}"},
    }


@pytest.mark.parametrize("p", PROVIDERS, ids=PROVIDER_IDS)
def test_codex_request_is_served(p: Provider, http: httpx.Client, mocks: Mocks, unique):
    up = p.upstream_model(unique)
    mock = p.mock(mocks)
    mock.on(up, p.answer(["Done: ", "out.txt holds hi."], prompt=900, completion=9))

    resp = http.post(
        "/v1/responses",
        json=codex_turn(p.client_model(up)),
        headers={"authorization": "Bearer unused", "accept": "text/event-stream", "originator": "codex_exec",
                 "session-id": "01a23d34", "x-codex-beta-features": "remote_compaction_v2"},
    )

    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/event-stream")
    datas = [json.loads(data) for _, data in sse_events(resp.text)]
    assert datas[-1]["type"] == "response.completed"
    done = [d["item"] for d in datas if d["type"] == "response.output_item.done"]
    assert [(i["type"], i["content"][0]["text"]) for i in done] == [("message", "Done: out.txt holds hi.")]

    rec = mock.only_request_for(up)
    sent = upstream_messages(rec.body)
    assert sent[0]["role"] == "system" and "You are a coding agent" in sent[0]["content"]
    assert any(m["role"] == "user" and "Run echo hi > out.txt" in m["content"] for m in sent)
    assistant = next(m for m in sent if m["role"] == "assistant")
    assert [(n, a) for _, n, a in assistant["tool_calls"]] == [("exec_command", {"cmd": "echo hi > out.txt"})]
    tool = next(m for m in sent if m["role"] == "tool")
    assert tool["content"] == "Process exited with code 0\nOutput:\n"
    if p.dialect == "openai":
        assert tool["tool_call_id"] == assistant["tool_calls"][0][0]
    # Chat upstreams take function tools only: the others stay at the gateway.
    assert "exec_command" in upstream_tool_names(rec.body)
    assert all(t.get("type") == "function" for t in rec.body["tools"]), rec.body["tools"]
    assert "encrypted_content" not in json.dumps(rec.body)


# --- images and structured output -----------------------------------------------------------


@pytest.mark.parametrize("p", PROVIDERS, ids=PROVIDER_IDS)
def test_input_image_reaches_upstream(p: Provider, client: openai.OpenAI, mocks: Mocks, unique):
    up = p.upstream_model(unique)
    mock = p.mock(mocks)
    mock.on(up, p.answer(["A transparent pixel."], prompt=70, completion=4))

    r = client.responses.create(
        model=p.client_model(up),
        input=[{"role": "user", "content": [
            {"type": "input_text", "text": "What is in this picture?"},
            {"type": "input_image", "image_url": f"data:image/png;base64,{PNG_B64}"},
        ]}],
    )

    assert r.output_text == "A transparent pixel."
    body = mock.only_request_for(up).body
    expected_type = "image/png" if p.dialect == "openai" else None
    assert upstream_images(body) == [(expected_type, PNG_B64)]


@pytest.mark.parametrize("p", PROVIDERS, ids=PROVIDER_IDS)
def test_json_schema_text_format(p: Provider, client: openai.OpenAI, mocks: Mocks, unique):
    up = p.upstream_model(unique)
    mock = p.mock(mocks)
    mock.on(up, p.answer(['{"capital": ', '"Paris"}'], prompt=30, completion=6))
    schema = {"type": "object", "properties": {"capital": {"type": "string"}}, "required": ["capital"], "additionalProperties": False}

    r = client.responses.create(
        model=p.client_model(up),
        input="Capital of France as JSON",
        text={"format": {"type": "json_schema", "name": "capital", "schema": schema, "strict": True}},
    )

    assert json.loads(r.output_text) == {"capital": "Paris"}
    body = mock.only_request_for(up).body
    assert upstream_schema(body) == schema
    if p.dialect == "openai":
        assert body["response_format"]["json_schema"]["name"] == "capital"


# --- what a stateless gateway refuses, and errors ---------------------------------------------


def test_previous_response_id_is_bad_request(client: openai.OpenAI, mocks: Mocks):
    """chatd keeps no responses: a continuation by id cannot be served, and says so."""
    seen = requests_seen(mocks)
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="ollama/qwen3:8b", input="And then?", previous_response_id="resp_abc123")
    e = info.value
    assert e.status_code == 400
    assert e.param == "previous_response_id"
    assert "previous_response_id" in e.body["message"]
    assert requests_seen(mocks) == seen


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_unregistered_provider_is_not_found(stream: bool, client: openai.OpenAI, mocks: Mocks):
    seen = requests_seen(mocks)
    with pytest.raises(openai.NotFoundError) as info:
        client.responses.create(model=UNREGISTERED_MODEL, input=QUESTION, stream=stream)
    e = info.value
    assert e.status_code == 404
    assert "kimi" in e.body["message"]
    # OpenAI's own API calls an unknown model so; chat completions say the same.
    assert e.code == "model_not_found"
    assert requests_seen(mocks) == seen


@pytest.mark.parametrize("p", PROVIDERS, ids=PROVIDER_IDS)
def test_upstream_429_is_rate_limit_error(p: Provider, client: openai.OpenAI, mocks: Mocks, unique):
    up = p.upstream_model(unique)
    mock = p.mock(mocks)
    mock.on(up, p.error(429, "Rate limit exceeded: free-models-per-min", retry_after="7"))

    with pytest.raises(openai.RateLimitError) as info:
        client.responses.create(model=p.client_model(up), input=QUESTION)

    e = info.value
    assert e.status_code == 429
    assert e.response.headers.get("retry-after") == "7"
    assert "Rate limit exceeded: free-models-per-min" in e.body["message"]
    assert len(mock.requests_for(up)) == 1


@pytest.mark.parametrize("p", PROVIDERS, ids=PROVIDER_IDS)
def test_upstream_500_is_internal_server_error(p: Provider, client: openai.OpenAI, mocks: Mocks, unique):
    up = p.upstream_model(unique)
    mock = p.mock(mocks)
    mock.on(up, p.error(500, "model runner crashed (mock)"))

    with pytest.raises(openai.InternalServerError) as info:
        client.responses.create(model=p.client_model(up), input=QUESTION, stream=True)

    e = info.value
    assert e.status_code == 502
    assert "model runner crashed (mock)" in e.body["message"]
    assert len(mock.requests_for(up)) == 1


@pytest.mark.parametrize(
    "p, scenario",
    [
        (OLLAMA, ollama_stream_error("Partial answer", "model runner crashed (mock)")),
        (OPENROUTER, openai_stream_error("Partial answer", {"message": "model runner crashed (mock)", "code": 502})),
    ],
    ids=PROVIDER_IDS,
)
def test_mid_stream_failure_is_response_failed(p: Provider, scenario, client: openai.OpenAI, mocks: Mocks, unique):
    """After streaming began, a failure ends the stream with ``response.failed`` (what Codex
    reads and reports), never ``response.completed``."""
    up = p.upstream_model(unique)
    p.mock(mocks).on(up, scenario)

    events = list(client.responses.create(model=p.client_model(up), input=QUESTION, stream=True))

    types = [e.type for e in events]
    assert [e.delta for e in events if e.type == "response.output_text.delta"] == ["Partial answer"]
    assert types[-1] == "response.failed"
    assert "response.completed" not in types
    failed = events[-1].response
    assert failed.status == "failed"
    assert "model runner crashed (mock)" in failed.error.message
