"""Contract 0.3.0 through the official OpenAI SDK: structured outputs, images, embeddings,
provider passthrough and upstream errors, checked on both sides (what the SDK got, what each
upstream was sent in its own dialect).

These tests run their own chatd (one per module) over the session's mock upstreams, with a
config of their own: an Ollama Cloud provider on its ``/api/chat`` endpoint (a provider
setting), and ``[chatd.images]`` fetching on. The image server is a mock on 127.0.0.1 over
plain http, let through the fetcher's address guard by ``allow_networks = ["127.0.0.1"]``:
it stands in for the https image host a real client names (TLS is the one thing it skips).
"""

from __future__ import annotations

import base64
import struct
import subprocess
import time
from pathlib import Path
from typing import Iterator

import openai
import pydantic
import pytest
from openai.lib._parsing._completions import type_to_response_format_param

from harness import (
    STARTUP_TIMEOUT_SECS,
    Chatd,
    Mocks,
    chatd_binary,
    chatd_env,
    free_port,
    stop,
    wait_healthy,
)
from mock_upstream import (
    MockUpstream,
    http_error,
    image_file,
    ollama_chat,
    ollama_embed_first_n,
    openai_chat,
    openai_embeddings_reversed,
)

# A 1x1 PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8/5+hHgAHggJ/PchI7wAAAABJRU5ErkJggg=="
)
PNG_B64 = base64.b64encode(PNG).decode()
DATA_URL = f"data:image/png;base64,{PNG_B64}"
REMOTE_URL = "https://images.example/cat.png"


class CityInfo(pydantic.BaseModel):
    name: str
    population: int


# --- this module's chatd -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def images() -> Iterator[MockUpstream]:
    mock = MockUpstream("images", {"/cat.png": image_file(PNG)}).start()
    yield mock
    mock.stop()


@pytest.fixture(scope="module")
def chatd03(mocks: Mocks, images: MockUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chatd]:
    workdir = tmp_path_factory.mktemp("chatd03")
    config_path = workdir / "lakehouse.toml"
    config_path.write_text(
        f"""\
[chatd]
default_provider = "ollama"
timeout_secs = 5

[chatd.images]
fetch_urls = true
allow_networks = ["127.0.0.1"]

[chatd.providers.ollama]
adapter = "ollama"
base_url = "{mocks.ollama.url}"

[chatd.providers.cloudchat]
adapter = "ollama_cloud"
base_url = "{mocks.cloud.url}"
key_env = "OLLAMA_CLOUD_API_KEY"
[chatd.providers.cloudchat.settings]
endpoint = "chat"

[chatd.providers.openrouter]
adapter = "openai_compat"
base_url = "{mocks.openrouter.url}/v1"
key_env = "OPENROUTER_API_KEY"
"""
    )
    port = free_port()
    stderr_path = workdir / "chatd.stderr.log"
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(
            [str(chatd_binary()), "serve", "--config", str(config_path), "--bind", f"127.0.0.1:{port}"],
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=err,
            env=chatd_env(),
            cwd=workdir,
        )
    handle = Chatd(proc=proc, port=port, stderr_path=stderr_path, config_path=config_path)
    why = wait_healthy(proc, port, time.monotonic() + STARTUP_TIMEOUT_SECS)
    if why is not None:
        stop(proc)
        pytest.fail(f"chatd failed to start: {why}\n{handle.stderr_text()}", pytrace=False)
    yield handle
    stop(proc)


def sdk(chatd: Chatd, max_retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{chatd.url}/v1",
        api_key="unused",
        max_retries=max_retries,
        timeout=30.0,
        http_client=openai.DefaultHttpxClient(trust_env=False),
    )


@pytest.fixture
def client03(chatd03: Chatd) -> openai.OpenAI:
    return sdk(chatd03)


# --- structured outputs --------------------------------------------------------------------------


def test_parse_round_trips_a_pydantic_model_through_ollama(client03: openai.OpenAI, mocks: Mocks, unique):
    up = unique("qwen3:8b")
    mocks.ollama.on(up, ollama_chat(['{"name": "Paris", ', '"population": 2100000}'], prompt_eval_count=9, eval_count=8))
    completion = client03.chat.completions.parse(
        model=f"ollama/{up}", messages=[{"role": "user", "content": "Tell me about Paris"}], response_format=CityInfo
    )
    assert completion.choices[0].message.parsed == CityInfo(name="Paris", population=2100000)
    sent = mocks.ollama.only_request_for(up).body
    # Ollama's native form: the schema itself is the request's `format`.
    assert sent["format"] == type_to_response_format_param(CityInfo)["json_schema"]["schema"]


def test_parse_round_trips_a_pydantic_model_through_openai_compat(client03: openai.OpenAI, mocks: Mocks, unique):
    up = unique("openai/gpt-5-mini")
    mocks.openrouter.on(up, openai_chat(['{"name": "Lyon", "population": 520000}'], prompt_tokens=9, completion_tokens=8))
    completion = client03.chat.completions.parse(
        model=f"openrouter/{up}", messages=[{"role": "user", "content": "Tell me about Lyon"}], response_format=CityInfo
    )
    assert completion.choices[0].message.parsed == CityInfo(name="Lyon", population=520000)
    sent = mocks.openrouter.only_request_for(up).body
    assert sent["response_format"] == type_to_response_format_param(CityInfo)


# --- images --------------------------------------------------------------------------------------


def vision(url: str) -> list[dict]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image_url", "image_url": {"url": url}},
            ],
        }
    ]


@pytest.mark.parametrize("mock_name, prefix", [("ollama", "ollama"), ("cloud", "cloudchat")])
@pytest.mark.parametrize("given", ["data_url", "remote_url"])
def test_vision_reaches_ollama_style_upstreams_inline(
    given: str, mock_name: str, prefix: str, client03: openai.OpenAI, mocks: Mocks, images: MockUpstream, unique
):
    """Ollama takes images as base64 only: a data: URL's data goes as it is; a URL is fetched
    by chatd (from the loopback image mock, see the module docstring) and sent inline."""
    mock = getattr(mocks, mock_name)
    up = unique("llava:7b")
    mock.on(up, ollama_chat(["A ", "white pixel."], prompt_eval_count=30, eval_count=4))
    url = DATA_URL if given == "data_url" else f"{images.url}/cat.png"
    fetched_before = len(images.requests)
    resp = client03.chat.completions.create(model=f"{prefix}/{up}", messages=vision(url))
    assert resp.choices[0].message.content == "A white pixel."
    sent = mock.only_request_for(up)
    assert sent.path == "/api/chat"
    assert sent.body["messages"][0]["content"] == "What is in this picture?"
    assert sent.body["messages"][0]["images"] == [PNG_B64]
    assert len(images.requests) == fetched_before + (given == "remote_url")


@pytest.mark.parametrize("url", [DATA_URL, REMOTE_URL], ids=["data_url", "https_url"])
def test_vision_reaches_openai_compat_as_image_url_parts(url: str, client03: openai.OpenAI, mocks: Mocks, unique):
    up = unique("openai/gpt-5-mini")
    mocks.openrouter.on(up, openai_chat(["A white pixel."], prompt_tokens=30, completion_tokens=4))
    resp = client03.chat.completions.create(model=f"openrouter/{up}", messages=vision(url))
    assert resp.choices[0].message.content == "A white pixel."
    sent = mocks.openrouter.only_request_for(up).body
    assert sent["messages"][0]["content"] == [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": url}},
    ]


def test_an_image_url_to_an_internal_address_is_refused(client03: openai.OpenAI, mocks: Mocks, unique):
    up = unique("llava:7b")
    with pytest.raises(openai.BadRequestError) as info:
        client03.chat.completions.create(
            model=f"ollama/{up}", messages=vision("http://169.254.169.254/latest/meta-data/")
        )
    assert info.value.code == "invalid_image_url"
    assert "link-local" in info.value.body["message"]
    assert mocks.ollama.requests_for(up) == []


# --- embeddings ----------------------------------------------------------------------------------

VECTORS = [[0.5, -1.25, 0.1], [1.5, 2.0, -0.3], [0.0, 0.25, 8.0]]


def as_f32(vector: list[float]) -> list[float]:
    """What a vector reads back as after a round trip through float32."""
    return list(struct.unpack(f"<{len(vector)}f", struct.pack(f"<{len(vector)}f", *vector)))


@pytest.mark.parametrize("encoding", ["default (base64)", "float"])
@pytest.mark.parametrize("route", ["ollama", "openrouter"])
def test_embeddings_single_and_batch(route: str, encoding: str, client03: openai.OpenAI, mocks: Mocks, unique):
    if route == "ollama":
        mock, up, scenario, tokens = mocks.ollama, unique("nomic-embed-text"), ollama_embed_first_n(VECTORS, prompt_eval_count=6), 6
    else:
        mock, up = mocks.openrouter, unique("openai/text-embedding-3-small")
        scenario, tokens = openai_embeddings_reversed(VECTORS, prompt_tokens=5), 5
    mock.on(up, scenario)
    base64_default = encoding.startswith("default")
    kwargs = {} if base64_default else {"encoding_format": "float"}
    # base64 carries the float32s exactly; as JSON numbers chatd writes each float32 as the
    # shortest decimal that reads back as it (0.1, not 0.10000000149011612).
    expected = [as_f32(v) for v in VECTORS] if base64_default else VECTORS
    one = client03.embeddings.create(model=f"{route}/{up}", input="a single text", **kwargs)
    assert [d.embedding for d in one.data] == expected[:1]
    assert (one.usage.prompt_tokens, one.usage.total_tokens) == (tokens, tokens)
    batch = client03.embeddings.create(model=f"{route}/{up}", input=["one", "two", "three"], **kwargs)
    assert [d.index for d in batch.data] == [0, 1, 2]
    assert [d.embedding for d in batch.data] == expected
    assert batch.model == f"{route}/{up}"
    sent = mock.requests_for(up)
    assert [r.body["input"] for r in sent] == [["a single text"], ["one", "two", "three"]]
    if route == "openrouter":
        # The adapter asks for floats whatever the client wants: chatd encodes base64 itself.
        assert all(r.body["encoding_format"] == "float" for r in sent)


def test_embeddings_from_a_provider_without_them_are_a_bad_request(client03: openai.OpenAI):
    with pytest.raises(openai.BadRequestError) as info:
        client03.embeddings.create(model="cloudchat/nomic-embed-text", input="x")
    assert info.value.code == "unsupported_by_provider"
    assert "embeddings" in info.value.body["message"]


# --- passthrough and errors ----------------------------------------------------------------------


def test_extra_body_provider_preferences_reach_openrouter(client03: openai.OpenAI, mocks: Mocks, unique):
    up = unique("anthropic/claude-x")
    mocks.openrouter.on(up, openai_chat(["routed"], prompt_tokens=3, completion_tokens=1))
    preferences = {"order": ["Anthropic", "Bedrock"], "allow_fallbacks": False}
    resp = client03.chat.completions.create(
        model=f"openrouter/{up}",
        messages=[{"role": "user", "content": "hi"}],
        extra_body={"provider": preferences, "transforms": ["middle-out"]},
    )
    assert resp.choices[0].message.content == "routed"
    sent = mocks.openrouter.only_request_for(up).body
    assert sent["provider"] == preferences
    assert sent["transforms"] == ["middle-out"]


def test_an_upstream_404_is_not_found_and_not_retried(chatd03: Chatd, mocks: Mocks, unique):
    """The SDK retries 5xx (and 408/409/429) itself: an upstream's 404 passed on as a 502 used
    to be sent again twice. With the status kept, it is raised once as NotFoundError."""
    up = unique("openai/gone")
    mocks.openrouter.on(
        up,
        http_error(
            404,
            {"error": {"message": f"The model `{up}` does not exist", "type": "invalid_request_error", "code": "model_not_found"}},
        ),
    )
    retrying = sdk(chatd03, max_retries=2)
    with pytest.raises(openai.NotFoundError) as info:
        retrying.chat.completions.create(model=f"openrouter/{up}", messages=[{"role": "user", "content": "hi"}])
    assert info.value.code == "model_not_found"
    assert "does not exist" in info.value.body["message"]
    assert len(mocks.openrouter.requests_for(up)) == 1, "the SDK must not retry a 404"
