"""chatd's ``GET /metrics``, read by the Prometheus project's own OpenMetrics parser."""

from __future__ import annotations

import httpx
import openai
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from harness import Chatd, Mocks
from mock_upstream import ollama_chat


def _families(chatd: Chatd) -> dict:
    resp = httpx.get(f"{chatd.url}/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/openmetrics-text")
    return {f.name: f for f in text_string_to_metric_families(resp.text)}


def _value(families: dict, family: str, sample: str, **labels: str) -> float:
    for s in families[family].samples:
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    raise AssertionError(f"no {sample} {labels} in {family}")


def test_metrics_parse_and_count_a_completion(chatd: Chatd, client: openai.OpenAI, mocks: Mocks, unique):
    before = _families(chatd)
    requests_before = _value(before, "chatd_requests", "chatd_requests_total", provider="ollama")
    model = unique("qwen3:8b")
    mocks.ollama.on(model, ollama_chat(["counted"], prompt_eval_count=1, eval_count=1))
    answer = client.chat.completions.create(
        model=f"ollama/{model}", messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.choices[0].message.content == "counted"

    after = _families(chatd)
    assert _value(after, "chatd_requests", "chatd_requests_total", provider="ollama") == requests_before + 1
    assert after["chatd_request_duration_seconds"].type == "histogram"
    count = _value(
        after, "chatd_request_duration_seconds", "chatd_request_duration_seconds_count", provider="ollama"
    )
    inf = _value(
        after, "chatd_request_duration_seconds", "chatd_request_duration_seconds_bucket", provider="ollama", le="+Inf"
    )
    assert count == inf >= 1
    assert _value(after, "chatd_provider_registered", "chatd_provider_registered", provider="ollama") == 1
    assert _value(after, "chatd_adapter_instances_max", "chatd_adapter_instances_max") >= 1
