"""chatd's OpenAI ``POST /v1/embeddings`` through the official ``openai`` SDK, against an
Ollama upstream (``/api/embed``) and an OpenAI-compatible one (``/embeddings``).

The SDK asks for ``encoding_format: "base64"`` unless told otherwise and decodes the answer
itself, so both encodings are checked, the base64 one also on the raw body. The vectors are
exact in float32, so they survive any encoding unchanged.
"""

from __future__ import annotations

import httpx
import openai
import pytest

from harness import Mocks
from mock_upstream import decode_f32_base64
from providers import PROVIDER_IDS, PROVIDERS, UNREGISTERED_MODEL, Provider, requests_seen

V1 = [0.5, -0.25, 0.125, 1.0]
V2 = [1.0, 0.0, -0.75, 0.0625]
V3 = [-1.5, 2.0, 0.25, -0.5]


@pytest.mark.parametrize("p", PROVIDERS, ids=PROVIDER_IDS)
def test_single_input_float(p: Provider, client: openai.OpenAI, mocks: Mocks, unique):
    up = p.upstream_model(unique)
    mock = p.mock(mocks)
    mock.on(up, p.embed([V1], prompt=6))

    raw = client.embeddings.with_raw_response.create(model=p.client_model(up), input="hello", encoding_format="float")

    assert raw.headers.get("x-chatd-provider") == p.id
    r = raw.parse()
    assert r.object == "list"
    assert [(d.object, d.index, d.embedding) for d in r.data] == [("embedding", 0, V1)]
    assert r.usage.prompt_tokens == 6
    assert r.usage.total_tokens == 6

    rec = mock.only_request_for(up)
    assert (rec.method, rec.path) == ("POST", p.embed_path)
    p.check_auth(rec)
    assert rec.body["model"] == up
    assert rec.body["input"] in (["hello"], "hello")


@pytest.mark.parametrize("p", PROVIDERS, ids=PROVIDER_IDS)
def test_batch_float(p: Provider, client: openai.OpenAI, mocks: Mocks, unique):
    up = p.upstream_model(unique)
    mock = p.mock(mocks)
    mock.on(up, p.embed([V1, V2, V3], prompt=9))

    r = client.embeddings.create(model=p.client_model(up), input=["alpha", "beta", "gamma"], encoding_format="float")

    assert [d.index for d in r.data] == [0, 1, 2]
    assert [d.embedding for d in r.data] == [V1, V2, V3], "one vector per input, in input order"
    assert r.usage.prompt_tokens == 9
    assert mock.only_request_for(up).body["input"] == ["alpha", "beta", "gamma"]


@pytest.mark.parametrize("p", PROVIDERS, ids=PROVIDER_IDS)
def test_default_encoding_is_base64(p: Provider, client: openai.OpenAI, mocks: Mocks, unique):
    """What the SDK does by default: it sends ``encoding_format: "base64"`` and decodes."""
    up = p.upstream_model(unique)
    p.mock(mocks).on(up, p.embed([V1, V2], prompt=4))

    r = client.embeddings.create(model=p.client_model(up), input=["alpha", "beta"])

    assert [d.embedding for d in r.data] == [V1, V2]


@pytest.mark.parametrize("p", PROVIDERS, ids=PROVIDER_IDS)
def test_base64_on_the_wire(p: Provider, http: httpx.Client, mocks: Mocks, unique):
    up = p.upstream_model(unique)
    p.mock(mocks).on(up, p.embed([V1, V2], prompt=4))

    resp = http.post(
        "/v1/embeddings", json={"model": p.client_model(up), "input": ["alpha", "beta"], "encoding_format": "base64"}
    )

    assert resp.status_code == 200, resp.text
    data = resp.json()["data"]
    assert all(isinstance(d["embedding"], str) for d in data), "base64 text, little-endian float32"
    assert [decode_f32_base64(d["embedding"]) for d in data] == [V1, V2]


def test_unregistered_provider_is_not_found(client: openai.OpenAI, mocks: Mocks):
    seen = requests_seen(mocks)
    with pytest.raises(openai.NotFoundError) as info:
        client.embeddings.create(model=UNREGISTERED_MODEL, input="hello")
    assert info.value.status_code == 404
    assert "kimi" in info.value.body["message"]
    assert requests_seen(mocks) == seen


def test_empty_input_is_bad_request(client: openai.OpenAI, mocks: Mocks):
    seen = requests_seen(mocks)
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="ollama/nomic-embed-text", input=[])
    assert info.value.param == "input"
    assert requests_seen(mocks) == seen


@pytest.mark.parametrize("p", PROVIDERS, ids=PROVIDER_IDS)
def test_upstream_500_is_internal_server_error(p: Provider, client: openai.OpenAI, mocks: Mocks, unique):
    up = p.upstream_model(unique)
    mock = p.mock(mocks)
    mock.on(up, p.error(500, "embedding runner crashed (mock)"))

    with pytest.raises(openai.InternalServerError) as info:
        client.embeddings.create(model=p.client_model(up), input="hello")

    assert info.value.status_code == 502
    assert "embedding runner crashed (mock)" in info.value.body["message"]
    assert len(mock.requests_for(up)) == 1
