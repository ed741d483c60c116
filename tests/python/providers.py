"""The two kinds of provider the client-format tests go through, as the client names a model
and as the upstream mock must answer: an ``ollama``-adapter provider (NDJSON ``/api/chat``,
``/api/embed``) and an ``openai_compat``-adapter provider (SSE ``/chat/completions``,
``/embeddings``). Every client format chatd serves is translated to both, so each test runs
through each.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable, Optional

from harness import OPENROUTER_KEY, Mocks
from mock_upstream import (
    MockUpstream,
    Recorded,
    Scenario,
    http_error,
    ollama_chat,
    ollama_embed,
    openai_chat,
    openai_embeddings,
)

# A tool call as a test scripts it: (id the upstream gives it or None, name, arguments).
ToolCall = tuple[Optional[str], str, dict]


@dataclass(frozen=True)
class Provider:
    id: str
    mock_name: str  # attribute of Mocks
    chat_path: str
    embed_path: str
    dialect: str  # "ollama" | "openai"
    key: Optional[str]  # bearer token the upstream must get; None = no authorization header

    def mock(self, mocks: Mocks) -> MockUpstream:
        return getattr(mocks, self.mock_name)

    def upstream_model(self, unique: Callable[[str], str]) -> str:
        if self.dialect == "openai":
            return f"acme/{unique('model-x')}"  # vendor/model, as OpenRouter names them
        return unique("qwen3:8b")

    def client_model(self, upstream_model: str) -> str:
        return f"{self.id}/{upstream_model}"

    def answer(
        self, pieces: list[str], *, prompt: int, completion: int, tool_calls: Optional[list[ToolCall]] = None
    ) -> Scenario:
        """A chat answer in this upstream's dialect: ``pieces`` (streamed one per event), then
        ``tool_calls`` if any."""
        if self.dialect == "ollama":
            calls = [{"function": {"name": n, "arguments": a}} for _, n, a in tool_calls or []] or None
            return ollama_chat(pieces, prompt_eval_count=prompt, eval_count=completion, tool_calls=calls)
        calls = [
            {"id": i, "type": "function", "function": {"name": n, "arguments": json.dumps(a)}}
            for i, n, a in tool_calls or []
        ]
        deltas = []
        for index, (i, n, a) in enumerate(tool_calls or []):
            text = json.dumps(a)
            half = len(text) // 2
            deltas.append([{"index": index, "id": i, "type": "function", "function": {"name": n, "arguments": ""}}])
            deltas.append([{"index": index, "function": {"arguments": text[:half]}}])
            deltas.append([{"index": index, "function": {"arguments": text[half:]}}])
        return openai_chat(
            pieces,
            prompt_tokens=prompt,
            completion_tokens=completion,
            tool_calls=calls or None,
            tool_call_deltas=deltas or None,
        )

    def embed(self, vectors: list[list[float]], *, prompt: int) -> Scenario:
        if self.dialect == "ollama":
            return ollama_embed(vectors, prompt_eval_count=prompt)
        return openai_embeddings(vectors, prompt_tokens=prompt)

    def error(self, status: int, message: str, retry_after: Optional[str] = None) -> Scenario:
        """An upstream error in this dialect's shape."""
        headers = [("Retry-After", retry_after)] if retry_after else []
        if self.dialect == "ollama":
            return http_error(status, {"error": message}, headers=headers)
        kind = "rate_limit_error" if status == 429 else "server_error"
        return http_error(status, {"error": {"message": message, "type": kind, "param": None, "code": None}}, headers=headers)

    def check_auth(self, rec: Recorded) -> None:
        if self.key is None:
            assert "authorization" not in rec.headers, f"{self.id} must get no credentials, got {rec.headers}"
        else:
            assert rec.headers.get("authorization") == f"Bearer {self.key}"

    def streamed(self, rec: Recorded) -> bool:
        """Whether chatd asked this upstream to stream."""
        body = rec.body if isinstance(rec.body, dict) else {}
        if self.dialect == "ollama":
            return body.get("stream") is not False  # Ollama streams unless told not to
        return body.get("stream") is True

    def max_tokens(self, body: dict) -> Optional[int]:
        if self.dialect == "ollama":
            return (body.get("options") or {}).get("num_predict")
        return body.get("max_tokens", body.get("max_completion_tokens"))

    def temperature(self, body: dict) -> Optional[float]:
        if self.dialect == "ollama":
            return (body.get("options") or {}).get("temperature")
        return body.get("temperature")


OLLAMA = Provider("ollama", "ollama", "/api/chat", "/api/embed", "ollama", None)
OPENROUTER = Provider(
    "openrouter", "openrouter", "/v1/chat/completions", "/v1/embeddings", "openai", OPENROUTER_KEY
)
PROVIDERS = [OLLAMA, OPENROUTER]
PROVIDER_IDS = [p.id for p in PROVIDERS]

# The provider configured but not registered (its key variable is unset): routing to it is a 404.
UNREGISTERED_MODEL = "kimi/kimi-for-coding"


def requests_seen(mocks: Mocks) -> dict[str, int]:
    """How many requests each mock has received, to prove that none reached an upstream."""
    return {m.name: len(m.requests) for m in mocks.all()}
