#!/usr/bin/env python3
"""Mock LLM upstream for the agent end-to-end run (tests/agents/run.sh).

chatd translates what the agents send (Anthropic Messages, OpenAI Responses) into its
providers' dialects, so this mock speaks the *providers'* dialects and scripts one agent turn:

* Ollama ``POST /api/chat`` (NDJSON when streaming, JSON otherwise), ``GET /api/tags``;
* OpenAI ``POST /v1/chat/completions`` (SSE when streaming, JSON otherwise), ``GET /v1/models``.

While the conversation holds no tool result yet and the request offers a shell tool, the
answer is one call of that tool writing ``MARKER`` into ``out.txt``; once a tool result is
there, the answer is the text ``FINAL``. Shell tools by name, as the agents define them:
Claude Code's ``Bash`` (``{"command": str}``), Codex's ``exec_command`` (``{"cmd": str}``),
and, for older or other agents, ``shell_command`` (``{"command": str}``) and ``shell``
(``{"command": [argv]}``).

Every request is appended to ``--log`` as one JSON line (method, path, headers, body), so a
failed run can show what chatd sent. Prints its port on stdout once listening.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MARKER = "chatd-agent-e2e"
COMMAND = f"echo {MARKER} > out.txt"
FINAL = f"AGENT-DONE: out.txt now holds {MARKER}."
CREATED_AT = "2026-01-02T03:04:05.000000Z"

LOCK = threading.Lock()
LOG = None


def shell_call(tools: list[dict]):
    """(name, arguments) of a call to the request's shell tool, or None if it offers none."""
    names = [(t.get("function") or {}).get("name") for t in tools]
    if "Bash" in names:
        return "Bash", {"command": COMMAND, "description": f"Write {MARKER} to out.txt"}
    if "exec_command" in names:
        return "exec_command", {"cmd": COMMAND}
    if "shell_command" in names:
        return "shell_command", {"command": COMMAND}
    if "shell" in names:
        return "shell", {"command": ["bash", "-lc", COMMAND]}
    return None


def pieces_of(text: str) -> list[str]:
    """``text`` in word-sized pieces that join back to it exactly, streamed one per event."""
    words = text.split(" ")
    return [w + " " for w in words[:-1]] + [words[-1]] if text else []


def has_tool_result(messages: list[dict]) -> bool:
    return any(m.get("role") == "tool" for m in messages)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet: the JSONL log says it all
        pass

    def do_GET(self):
        self.handle_request()

    def do_POST(self):
        self.handle_request()

    def read_body(self) -> bytes:
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

    def handle_request(self):
        raw = self.read_body()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {}
        path = self.path.split("?")[0]
        with LOCK:
            LOG.write(json.dumps({"t": time.time(), "method": self.command, "path": self.path,
                                  "headers": dict(self.headers.items()), "body": body}) + "\n")
            LOG.flush()
        try:
            if path == "/api/tags":
                return self.json(200, {"models": [{"name": "agent-model", "model": "agent-model", "modified_at": CREATED_AT,
                                                   "size": 1, "digest": "0" * 64, "details": {"format": "gguf"}}]})
            if path == "/v1/models":
                return self.json(200, {"object": "list", "data": [{"id": "acme/agent-model", "object": "model",
                                                                  "created": 1700000000, "owned_by": "acme"}]})
            if path == "/api/chat":
                return self.ollama_chat(body)
            if path == "/v1/chat/completions":
                return self.openai_chat(body)
            self.json(404, {"error": f"mock: no route {self.command} {path}"})
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    # plumbing -------------------------------------------------------------------------------

    def json(self, status: int, obj) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def stream(self, content_type: str, pieces: list[bytes]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for piece in pieces:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.flush()
            time.sleep(0.002)
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    # the scripted turn ------------------------------------------------------------------------

    def plan(self, body: dict):
        """(text, tool call or None) for this request."""
        messages = body.get("messages") or []
        if has_tool_result(messages):
            return FINAL, None
        call = shell_call(body.get("tools") or [])
        if call:
            return "", call
        return "Hello from the agent mock.", None  # a side request (title, summary, ...)

    def ollama_chat(self, body: dict) -> None:
        text, call = self.plan(body)
        model = body.get("model")
        calls = [{"function": {"name": call[0], "arguments": call[1]}}] if call else None
        stats = {"done": True, "done_reason": "stop", "total_duration": 1000000, "prompt_eval_count": 120, "eval_count": 12}
        if body.get("stream") is False:
            message = {"role": "assistant", "content": text}
            if calls:
                message["tool_calls"] = calls
            return self.json(200, {"model": model, "created_at": CREATED_AT, "message": message, **stats})
        lines = []
        for piece in pieces_of(text):
            lines.append({"model": model, "created_at": CREATED_AT, "message": {"role": "assistant", "content": piece}, "done": False})
        if calls:
            # Ollama sends tool calls whole, without ids, and still says "stop" at the end.
            lines.append({"model": model, "created_at": CREATED_AT, "message": {"role": "assistant", "content": "", "tool_calls": calls}, "done": False})
        lines.append({"model": model, "created_at": CREATED_AT, "message": {"role": "assistant", "content": ""}, **stats})
        self.stream("application/x-ndjson", [(json.dumps(line) + "\n").encode() for line in lines])

    def openai_chat(self, body: dict) -> None:
        text, call = self.plan(body)
        model = body.get("model")
        finish = "tool_calls" if call else "stop"
        usage = {"prompt_tokens": 120, "completion_tokens": 12, "total_tokens": 132}
        call_id = "call_agent_1"
        if body.get("stream") is not True:
            message = {"role": "assistant", "content": text or None}
            if call:
                message["tool_calls"] = [{"id": call_id, "type": "function",
                                          "function": {"name": call[0], "arguments": json.dumps(call[1])}}]
            return self.json(200, {"id": "chatcmpl-agent", "object": "chat.completion", "created": 1700000000, "model": model,
                                   "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage})

        def chunk(delta, finish_reason=None, with_usage=False):
            c = {"id": "chatcmpl-agent", "object": "chat.completion.chunk", "created": 1700000000, "model": model,
                 "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
            if with_usage:
                c["usage"] = usage
            return c

        events = [chunk({"role": "assistant", "content": ""})]
        for piece in pieces_of(text):
            events.append(chunk({"content": piece}))
        if call:
            args = json.dumps(call[1])
            half = len(args) // 2
            events.append(chunk({"tool_calls": [{"index": 0, "id": call_id, "type": "function",
                                                 "function": {"name": call[0], "arguments": ""}}]}))
            events.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": args[:half]}}]}))
            events.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": args[half:]}}]}))
        events.append(chunk({}, finish))
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append(chunk(None, with_usage=True))
        pieces = [f"data: {json.dumps(e)}\n\n".encode() for e in events] + [b"data: [DONE]\n\n"]
        self.stream("text/event-stream", pieces)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--log", required=True, help="JSONL file every request is appended to")
    args = parser.parse_args()
    global LOG
    LOG = open(args.log, "a")
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
