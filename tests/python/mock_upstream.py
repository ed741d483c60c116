"""An in-process mock LLM upstream for the chatd "real client" tests.

One ``MockUpstream`` is an HTTP/1.1 server (``ThreadingHTTPServer`` on 127.0.0.1, port 0) in
a daemon thread. It records every request it receives (method, path, lower-cased headers,
JSON body) and answers according to scenarios the tests register per upstream model name:

    mock.on("t3-qwen3:8b", ollama_chat(["Hel", "lo"], prompt_eval_count=12, eval_count=4))

A scenario is a callable ``(Recorded) -> Reply``; registering several for one model answers
successive requests with them in order (the last one repeats). The builders below speak the
three upstream dialects chatd's adapters use:

* Ollama ``POST /api/chat``: JSON, or NDJSON when ``"stream"`` is absent or true;
* Ollama ``POST /api/generate``: the same with ``"response"`` instead of ``"message"``;
* OpenAI ``POST /v1/chat/completions``: JSON, or SSE when ``"stream": true``;
* embeddings: Ollama ``POST /api/embed`` and OpenAI ``POST /v1/embeddings``.

Requests whose model has no scenario fall back to a fixed answer per path (``on_path``), for
endpoints chatd may or may not forward (``/api/show``, ``/api/version``). The helpers at the
end (``upstream_messages``, ``upstream_images``, ``upstream_schema``) read what reached the
upstream in either dialect, so a test can assert on it without caring which one it was.

Streamed replies use chunked transfer encoding; each NDJSON line / SSE event is its own
chunk, written and flushed separately (with a short pause in between) so chatd really sees
the body arrive piece by piece.
"""

from __future__ import annotations

import base64
import json
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable, Optional

CREATED_AT = "2026-01-02T03:04:05.000000Z"
CREATED = 1767323045
# Pause between two streamed pieces, so they leave as separate TCP segments.
STREAM_GAP_SECS = 0.005


@dataclass
class Recorded:
    """One request as the mock received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    raw: bytes

    @property
    def model(self) -> Optional[str]:
        return self.body.get("model") if isinstance(self.body, dict) else None

    def __str__(self) -> str:  # used in failure reports
        hdrs = {k: v for k, v in self.headers.items() if not k.startswith("x-stainless")}
        return f"{self.method} {self.path} headers={hdrs} body={self.raw.decode('utf-8', 'replace')}"


@dataclass
class Reply:
    """What the mock sends back: a whole body, or ``chunks`` streamed one by one."""

    status: int = 200
    body: bytes = b""
    chunks: Optional[Iterable[bytes]] = None
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


Scenario = Callable[[Recorded], Reply]


def json_reply(value: Any, status: int = 200, headers: Iterable[tuple[str, str]] = ()) -> Reply:
    return Reply(status=status, body=json.dumps(value).encode(), headers=list(headers))


class MockUpstream:
    """A recording HTTP server answering per-model scenarios."""

    def __init__(
        self,
        name: str,
        get_routes: Optional[dict[str, Scenario]] = None,
        path_routes: Optional[dict[str, Scenario]] = None,
    ):
        self.name = name
        self._lock = threading.Lock()
        self._requests: list[Recorded] = []
        self._scenarios: dict[str, list[Scenario]] = {}
        self._get_routes = dict(get_routes or {})
        # Answers by path for requests no model scenario claims (any method).
        self._path_routes = dict(path_routes or {})
        handler = type(f"Handler_{name}", (_Handler,), {"mock": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(
            target=self.server.serve_forever, name=f"mock-{name}", daemon=True
        )

    # lifecycle -----------------------------------------------------------------------------

    def start(self) -> "MockUpstream":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # scenarios -----------------------------------------------------------------------------

    def on(self, model: str, *scenarios: Scenario) -> None:
        """Answers requests for upstream model ``model`` with ``scenarios``, in order."""
        assert scenarios, "give at least one scenario"
        with self._lock:
            self._scenarios[model] = list(scenarios)

    def on_get(self, path: str, scenario: Scenario) -> None:
        with self._lock:
            self._get_routes[path] = scenario

    def on_path(self, path: str, scenario: Scenario) -> None:
        """Answers ``path`` (any method) when no model scenario matches the request."""
        with self._lock:
            self._path_routes[path] = scenario

    # recordings ----------------------------------------------------------------------------

    @property
    def requests(self) -> list[Recorded]:
        with self._lock:
            return list(self._requests)

    def requests_for(self, model: str) -> list[Recorded]:
        """Every request whose JSON body named ``model``, oldest first."""
        return [r for r in self.requests if r.model == model]

    def only_request_for(self, model: str) -> Recorded:
        got = self.requests_for(model)
        assert len(got) == 1, f"{self.name} mock: expected 1 request for {model!r}, got {len(got)}: " + "; ".join(map(str, got))
        return got[0]

    # internals -----------------------------------------------------------------------------

    def _record(self, rec: Recorded) -> None:
        with self._lock:
            self._requests.append(rec)

    def _dispatch(self, rec: Recorded) -> Reply:
        with self._lock:
            if rec.method == "GET":
                scenario = self._get_routes.get(rec.path)
            else:
                queue = self._scenarios.get(rec.model or "")
                scenario = None
                if queue:
                    scenario = queue.pop(0) if len(queue) > 1 else queue[0]
            if scenario is None:
                scenario = self._path_routes.get(rec.path.split("?")[0])
        if scenario is None:
            return json_reply(
                {"error": f"mock {self.name}: no scenario for {rec.method} {rec.path} model={rec.model!r}"},
                status=404,
            )
        return scenario(rec)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    mock: MockUpstream

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        raw = self._read_body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        headers: dict[str, str] = {}
        for k, v in self.headers.items():
            k = k.lower()
            headers[k] = f"{headers[k]}, {v}" if k in headers else v
        rec = Recorded(self.command, self.path, headers, body, raw)
        self.mock._record(rec)
        try:
            reply = self.mock._dispatch(rec)
        except Exception as e:  # a broken scenario must show up, not hang chatd
            reply = json_reply({"error": f"mock scenario raised {e!r}"}, status=599)
        try:
            self._send(reply)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _send(self, reply: Reply) -> None:
        self.send_response(reply.status)
        for k, v in reply.headers:
            self.send_header(k, v)
        self.send_header("Content-Type", reply.content_type)
        if reply.chunks is None:
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
            self.wfile.flush()
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        self.wfile.flush()
        for piece in reply.chunks:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.flush()
            time.sleep(STREAM_GAP_SECS)
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


# --- Ollama ----------------------------------------------------------------------------------


def _ollama_streams(rec: Recorded) -> bool:
    # Ollama streams unless the request says "stream": false.
    return not (isinstance(rec.body, dict) and rec.body.get("stream") is False)


def _ndjson(lines: list[dict]) -> Reply:
    return Reply(
        chunks=[(json.dumps(line) + "\n").encode() for line in lines],
        content_type="application/x-ndjson",
    )


def ollama_chat(
    pieces: list[str],
    *,
    prompt_eval_count: int,
    eval_count: int,
    done_reason: str = "stop",
    tool_calls: Optional[list[dict]] = None,
) -> Scenario:
    """An Ollama ``/api/chat`` answer: ``pieces`` joined, or streamed one line each.

    ``tool_calls`` are in Ollama's shape (``{"function": {"name", "arguments": {...}}}``).
    """

    def scenario(rec: Recorded) -> Reply:
        model = rec.model
        final_stats = {
            "done": True,
            "done_reason": done_reason,
            "total_duration": 123456789,
            "load_duration": 1234567,
            "prompt_eval_count": prompt_eval_count,
            "prompt_eval_duration": 2345678,
            "eval_count": eval_count,
            "eval_duration": 3456789,
        }
        if not _ollama_streams(rec):
            message: dict[str, Any] = {"role": "assistant", "content": "".join(pieces)}
            if tool_calls:
                message["tool_calls"] = tool_calls
            return json_reply({"model": model, "created_at": CREATED_AT, "message": message, **final_stats})
        lines = [
            {"model": model, "created_at": CREATED_AT, "message": {"role": "assistant", "content": p}, "done": False}
            for p in pieces
        ]
        if tool_calls:
            lines.append(
                {
                    "model": model,
                    "created_at": CREATED_AT,
                    "message": {"role": "assistant", "content": "", "tool_calls": tool_calls},
                    "done": False,
                }
            )
        lines.append(
            {"model": model, "created_at": CREATED_AT, "message": {"role": "assistant", "content": ""}, **final_stats}
        )
        return _ndjson(lines)

    return scenario


def ollama_generate(
    pieces: list[str], *, prompt_eval_count: int, eval_count: int, done_reason: str = "stop"
) -> Scenario:
    """An Ollama ``/api/generate`` answer (``"response"`` text instead of a message)."""

    def scenario(rec: Recorded) -> Reply:
        model = rec.model
        final_stats = {
            "done": True,
            "done_reason": done_reason,
            "context": [1, 2, 3],
            "total_duration": 123456789,
            "prompt_eval_count": prompt_eval_count,
            "eval_count": eval_count,
        }
        if not _ollama_streams(rec):
            return json_reply({"model": model, "created_at": CREATED_AT, "response": "".join(pieces), **final_stats})
        lines = [{"model": model, "created_at": CREATED_AT, "response": p, "done": False} for p in pieces]
        lines.append({"model": model, "created_at": CREATED_AT, "response": "", **final_stats})
        return _ndjson(lines)

    return scenario


def ollama_stream_error(first_piece: str, error: str) -> Scenario:
    """An NDJSON stream that sends one content line, then an Ollama error line, then ends."""

    def scenario(rec: Recorded) -> Reply:
        return _ndjson(
            [
                {"model": rec.model, "created_at": CREATED_AT, "message": {"role": "assistant", "content": first_piece}, "done": False},
                {"error": error},
            ]
        )

    return scenario


def ollama_tags(names: list[str]) -> Scenario:
    """``GET /api/tags``."""

    def scenario(rec: Recorded) -> Reply:
        return json_reply(
            {
                "models": [
                    {
                        "name": n,
                        "model": n,
                        "modified_at": CREATED_AT,
                        "size": 5_000_000_000,
                        "digest": "0" * 64,
                        "details": {"format": "gguf", "family": "qwen3"},
                    }
                    for n in names
                ]
            }
        )

    return scenario


# --- OpenAI Chat Completions -----------------------------------------------------------------


def _sse(events: list[Any], *, comment_first: bool = True) -> Reply:
    chunks = [b": OPENROUTER PROCESSING\n\n"] if comment_first else []
    for e in events:
        data = e if isinstance(e, str) else json.dumps(e)
        chunks.append(f"data: {data}\n\n".encode())
    return Reply(chunks=chunks, content_type="text/event-stream")


def _oa_chunk(model: str, delta: Optional[dict], finish: Optional[str] = None, usage: Optional[dict] = None) -> dict:
    chunk: dict[str, Any] = {
        "id": "gen-mock-1",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": model,
        "provider": "MockProvider",
        "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }
    if usage is not None:
        chunk["usage"] = usage
    return chunk


def openai_chat(
    pieces: list[str],
    *,
    prompt_tokens: int,
    completion_tokens: int,
    finish_reason: Optional[str] = None,
    tool_calls: Optional[list[dict]] = None,
    tool_call_deltas: Optional[list[list[dict]]] = None,
) -> Scenario:
    """An OpenAI ``/chat/completions`` answer: JSON, or SSE when the request streams.

    The SSE stream is: a comment line, a role chunk, one chunk per content piece, one chunk
    per entry of ``tool_call_deltas``, a finish chunk, a usage chunk (only when the request
    asked with ``stream_options.include_usage``), then ``[DONE]``.
    """
    if finish_reason is None:
        finish_reason = "tool_calls" if (tool_calls or tool_call_deltas) else "stop"
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }

    def scenario(rec: Recorded) -> Reply:
        body = rec.body if isinstance(rec.body, dict) else {}
        model = rec.model or ""
        if body.get("stream") is not True:
            message: dict[str, Any] = {"role": "assistant", "content": "".join(pieces) if pieces else None}
            if tool_calls:
                message["tool_calls"] = tool_calls
            return json_reply(
                {
                    "id": "gen-mock-1",
                    "object": "chat.completion",
                    "created": CREATED,
                    "model": model,
                    "provider": "MockProvider",
                    "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}],
                    "usage": usage,
                }
            )
        events: list[Any] = [_oa_chunk(model, {"role": "assistant", "content": ""})]
        events += [_oa_chunk(model, {"content": p}) for p in pieces]
        events += [_oa_chunk(model, {"tool_calls": d}) for d in (tool_call_deltas or [])]
        events.append(_oa_chunk(model, {}, finish=finish_reason))
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append(_oa_chunk(model, None, usage=usage))
        events.append("[DONE]")
        return _sse(events)

    return scenario


def openai_stream_error(first_piece: str, error: dict) -> Scenario:
    """An SSE stream: a role chunk, one content chunk, then ``data: {"error": ...}``, then EOF."""

    def scenario(rec: Recorded) -> Reply:
        model = rec.model or ""
        return _sse(
            [
                _oa_chunk(model, {"role": "assistant", "content": ""}),
                _oa_chunk(model, {"content": first_piece}),
                {"error": error},
            ]
        )

    return scenario


def openai_models(models: list[dict]) -> Scenario:
    """``GET /v1/models``."""

    def scenario(rec: Recorded) -> Reply:
        return json_reply({"object": "list", "data": [{"object": "model", **m} for m in models]})

    return scenario


# --- holding a stream back ------------------------------------------------------------------


class Gate:
    """Lets a test hold a streamed reply after its first pieces until the test has seen them
    arrive through chatd (proving chatd forwards pieces as they come, not at the end)."""

    def __init__(self, timeout: float = 4.0):
        self.event = threading.Event()
        self.timeout = timeout
        self.timed_out = False

    def release(self) -> None:
        self.event.set()


def gated(scenario: Scenario, *, after: int, gate: Gate) -> Scenario:
    """``scenario``, but its stream pauses after ``after`` pieces until ``gate`` is released
    (or its timeout passes, which the gate records)."""

    def wrapped(rec: Recorded) -> Reply:
        reply = scenario(rec)
        assert reply.chunks is not None, "gated() needs a streamed reply"
        pieces = list(reply.chunks)

        def held() -> Iterable[bytes]:
            yield from pieces[:after]
            if not gate.event.wait(gate.timeout):
                gate.timed_out = True
            yield from pieces[after:]

        reply.chunks = held()
        return reply

    return wrapped


# --- errors ----------------------------------------------------------------------------------


def http_error(status: int, body: Any, headers: Iterable[tuple[str, str]] = ()) -> Scenario:
    """A non-2xx answer with a JSON (or, for ``str``, plain text) body."""

    def scenario(rec: Recorded) -> Reply:
        if isinstance(body, str):
            return Reply(status=status, body=body.encode(), content_type="text/plain", headers=list(headers))
        return json_reply(body, status=status, headers=headers)

    return scenario


# --- embeddings ------------------------------------------------------------------------------


def ollama_embed_first_n(vectors: list[list[float]], *, prompt_eval_count: int) -> Scenario:
    """An Ollama ``POST /api/embed`` answer: the first ``len(input)`` of ``vectors``."""

    def scenario(rec: Recorded) -> Reply:
        assert rec.path == "/api/embed", f"ollama_embed got {rec.path}"
        n = len(rec.body["input"])
        return json_reply(
            {"model": rec.model, "embeddings": vectors[:n], "prompt_eval_count": prompt_eval_count}
        )

    return scenario


def ollama_embed(vectors: list[list[float]], *, prompt_eval_count: int) -> Scenario:
    """Ollama ``POST /api/embed``: one vector per input, in order."""

    def scenario(rec: Recorded) -> Reply:
        return json_reply(
            {
                "model": rec.model,
                "embeddings": vectors,
                "total_duration": 14143917,
                "load_duration": 1019500,
                "prompt_eval_count": prompt_eval_count,
            }
        )

    return scenario


def openai_embeddings_reversed(vectors: list[list[float]], *, prompt_tokens: int) -> Scenario:
    """An OpenAI ``POST /embeddings`` answer: the first ``len(input)`` of ``vectors``, listed
    in reverse order (each with its ``index``), as a server is free to."""

    def scenario(rec: Recorded) -> Reply:
        assert rec.path.endswith("/embeddings"), f"openai_embeddings got {rec.path}"
        n = len(rec.body["input"])
        data = [{"object": "embedding", "index": i, "embedding": vectors[i]} for i in reversed(range(n))]
        return json_reply(
            {
                "object": "list",
                "data": data,
                "model": rec.model,
                "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
            }
        )

    return scenario


def openai_embeddings(vectors: list[list[float]], *, prompt_tokens: int) -> Scenario:
    """OpenAI ``POST /embeddings``: floats, or base64 little-endian float32 when the request
    asks for ``"encoding_format": "base64"`` (as OpenAI itself answers)."""

    def scenario(rec: Recorded) -> Reply:
        body = rec.body if isinstance(rec.body, dict) else {}
        as_base64 = body.get("encoding_format") == "base64"
        data = [
            {"object": "embedding", "index": i, "embedding": encode_f32_base64(v) if as_base64 else v}
            for i, v in enumerate(vectors)
        ]
        return json_reply(
            {
                "object": "list",
                "data": data,
                "model": rec.model,
                "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
            }
        )

    return scenario


def image_file(data: bytes, content_type: str = "image/png") -> Scenario:
    """A ``GET`` answered with an image's bytes."""

    def scenario(rec: Recorded) -> Reply:
        return Reply(body=data, content_type=content_type)

    return scenario


def encode_f32_base64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def decode_f32_base64(text: str) -> list[float]:
    raw = base64.b64decode(text)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


# --- Ollama model details ----------------------------------------------------------------------


def ollama_show() -> Scenario:
    """``POST /api/show``, for a chatd that asks its Ollama upstream about a model."""

    def scenario(rec: Recorded) -> Reply:
        return json_reply(
            {
                "modelfile": "FROM qwen3:8b\n",
                "parameters": "temperature 0.6",
                "template": "{{ .Prompt }}",
                "details": {"format": "gguf", "family": "qwen3", "parameter_size": "8.2B", "quantization_level": "Q4_K_M"},
                "model_info": {"general.architecture": "qwen3", "qwen3.context_length": 40960},
                "capabilities": ["completion", "tools"],
                "modified_at": CREATED_AT,
            }
        )

    return scenario


def ollama_version(version: str = "0.12.6") -> Scenario:
    return lambda rec: json_reply({"version": version})


# --- what reached the upstream, in either dialect ------------------------------------------


def upstream_messages(body: dict) -> list[dict]:
    """The conversation of an upstream chat request (Ollama ``/api/chat`` or OpenAI
    ``/chat/completions``), normalised: ``role``, ``content`` (the text, parts joined),
    ``tool_calls`` as ``[(id or None, name, arguments as a dict)]``, ``tool_call_id``."""
    out = []
    for m in body.get("messages") or []:
        content = m.get("content")
        if isinstance(content, list):
            content = "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
        calls = []
        for c in m.get("tool_calls") or []:
            fn = c.get("function") or {}
            args = fn.get("arguments")
            if isinstance(args, str):
                args = json.loads(args) if args else {}
            calls.append((c.get("id"), fn.get("name"), args))
        out.append(
            {
                "role": m.get("role"),
                "content": content or "",
                "tool_calls": calls,
                "tool_call_id": m.get("tool_call_id"),
            }
        )
    return out


def upstream_tool_names(body: dict) -> list[str]:
    """Names of the tools an upstream chat request offers (both dialects use OpenAI's shape)."""
    return [(t.get("function") or {}).get("name") for t in body.get("tools") or []]


def upstream_images(body: dict) -> list[tuple[Optional[str], str]]:
    """Every image of an upstream chat request as ``(media type or None, base64)``: Ollama's
    ``messages[].images`` (bare base64, no type) or OpenAI ``image_url`` parts (data URLs)."""
    found: list[tuple[Optional[str], str]] = []
    for m in body.get("messages") or []:
        for img in m.get("images") or []:
            found.append((None, img))
        content = m.get("content")
        if isinstance(content, list):
            for p in content:
                if isinstance(p, dict) and p.get("type") == "image_url":
                    url = (p.get("image_url") or {}).get("url", "")
                    head, _, data = url.partition(",")
                    if head.startswith("data:") and head.endswith(";base64"):
                        found.append((head[len("data:") : -len(";base64")], data))
                    else:
                        found.append((None, url))
    return found


def upstream_schema(body: dict) -> Optional[dict]:
    """The JSON schema an upstream chat request asks the answer to follow: Ollama's
    ``format`` (a schema object) or OpenAI's ``response_format.json_schema.schema``."""
    fmt = body.get("format")
    if isinstance(fmt, dict):
        return fmt
    rf = body.get("response_format")
    if isinstance(rf, dict) and rf.get("type") == "json_schema":
        return (rf.get("json_schema") or {}).get("schema")
    return None
