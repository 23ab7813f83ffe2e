"""The OpenAI-compatible API, driven by the real `openai` client against `tweetforge serve` on loopback:
completions (n, max_tokens, stop, seed, streaming), the models list, experiments sticky by `user`,
the generated marks, the generation log, and errors the client raises as the right exceptions."""

from __future__ import annotations

import openai
import pytest
from sqlalchemy import select

from conftest import LiveServer, quick
from tweetforge.db.schema import generations
from tweetforge.experiments.ab import create_experiment
from tweetforge.registry.versions import register
from tweetforge.serving.app import create_app
from tweetforge.serving.service import Service, ServiceSettings
from tweetforge.training.train import train


@pytest.fixture(scope="module")
def client(tiny_gpt2, store):
    home, engine, trump, _ = store
    versions = [register(engine, home / "models", train(quick(tiny_gpt2, max_steps=2, seed=s, name="tiny-oa"), trump, home), trump)
                for s in (1, 2)]
    create_experiment(engine, "oa-exp", [("a", versions[0].ref, 50), ("b", versions[1].ref, 50)])
    service = Service(engine, ServiceSettings(models=["tiny-oa:1", "tiny-oa:2"], max_wait_ms=20))
    service.load()
    with LiveServer(create_app(service, rate_limit_per_minute=1000)) as server:
        yield openai.OpenAI(base_url=f"{server.url}/v1", api_key="not-needed", max_retries=0), engine
    for loaded in service.loaded():
        loaded.batcher.stop()


def test_completions_are_marked_generated_limited_and_logged(client):
    oa, engine = client
    raw = oa.completions.with_raw_response.create(model="tiny-oa", prompt="The", max_tokens=6, n=3, seed=7, temperature=1.0)
    assert raw.headers["x-tweetforge-generated"] == "true"
    completion = raw.parse()
    assert completion.object == "text_completion" and completion.model == "tiny-oa:2"
    assert completion.system_fingerprint == "tweetforge-generated-tiny-oa:2"
    body = completion.to_dict()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2] and all(c["generated"] is True for c in body["choices"])
    assert all(c.finish_reason in ("stop", "length") for c in completion.choices)
    assert 3 <= completion.usage.completion_tokens <= 18 and completion.usage.prompt_tokens == 2  # separator + "The"
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    provenance = body["tweetforge"]
    assert provenance["generated"] is True and provenance["ref"] == "tiny-oa:2" and completion.id == f"cmpl-{provenance['generation_id']}"
    with engine.connect() as conn:
        logged = conn.execute(select(generations.c.posts).where(generations.c.id == provenance["generation_id"])).scalar()
    assert [p["text"] for p in logged] == [("The" + c.text).strip() for c in completion.choices]
    again = oa.completions.create(model="tiny-oa", prompt="The", max_tokens=6, n=3, seed=7)
    assert [c.text for c in again.choices] == [c.text for c in completion.choices]  # a seed, the same posts


def test_stop_sequences_end_the_text_before_them(client):
    oa, _ = client
    free = oa.completions.create(model="tiny-oa:1", prompt="We", max_tokens=40, seed=3).choices[0].text
    assert len(free) > 4, free
    stop = free[2:4]
    cut = oa.completions.create(model="tiny-oa:1", prompt="We", max_tokens=40, seed=3, stop=[stop, "zzzz"]).choices[0]
    assert cut.text == free[: free.index(stop)] and cut.finish_reason == "stop"


def test_streaming_in_openai_chunks(client):
    oa, _ = client
    chunks = list(oa.completions.create(model="tiny-oa:2", prompt=["A", "B"], max_tokens=5, n=2, stream=True, user="streamer"))
    texts = {c.index: c.text for chunk in chunks for c in chunk.choices}
    assert sorted(texts) == [0, 1, 2, 3] and all(chunk.system_fingerprint == "tweetforge-generated-tiny-oa:2" for chunk in chunks)
    last = chunks[-1].to_dict()
    assert last["choices"] == [] and last["tweetforge"]["generated"] is True and len(last["tweetforge"]["generation_ids"]) == 2
    assert last["tweetforge"]["user_id"] == "streamer" and chunks[-1].usage is None


def test_a_stream_ends_with_the_usage_when_asked(client):
    oa, _ = client
    chunks = list(oa.completions.create(model="tiny-oa:2", prompt="The", max_tokens=5, n=2, seed=4, stream=True,
                                        stream_options={"include_usage": True}))
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and all(chunk.usage is None for chunk in chunks[:-1])
    whole = oa.completions.create(model="tiny-oa:2", prompt="The", max_tokens=5, n=2, seed=4)
    assert (usage.prompt_tokens, usage.completion_tokens) == (whole.usage.prompt_tokens, whole.usage.completion_tokens)
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens and 2 <= usage.completion_tokens <= 10


def test_models_list_names_versions_personas_and_experiments(client):
    oa, _ = client
    models = {m.id: m.to_dict() for m in oa.models.list()}
    assert {"tiny-oa:1", "tiny-oa:2", "tiny-oa", "oa-exp"} <= set(models)
    assert models["tiny-oa"]["ref"] == "tiny-oa:2" and models["oa-exp"]["kind"] == "experiment"
    assert models["tiny-oa:1"]["object"] == "model" and models["tiny-oa:1"]["owned_by"] == "tweetforge" and models["tiny-oa:1"]["loaded"]


def test_an_experiment_is_sticky_by_user(client):
    oa, _ = client
    seen = {}
    for user in ("u1", "u2", "u3", "u4", "u5", "u6"):
        first, second = (oa.completions.create(model="oa-exp", prompt="Hi", max_tokens=3, user=user).to_dict()["tweetforge"] for _ in range(2))
        assert first["experiment"] == "oa-exp" and first["variant"] == second["variant"] and first["user_id"] == user
        seen[user] = first["variant"]
    assert set(seen.values()) == {"a", "b"}


def test_errors_arrive_as_the_clients_exceptions(client):
    oa, _ = client
    with pytest.raises(openai.NotFoundError, match="no model named 'nobody'"):
        oa.completions.create(model="nobody", prompt="x")
    with pytest.raises(openai.UnprocessableEntityError, match="not supported by tweetforge: logprobs"):
        oa.completions.create(model="tiny-oa", prompt="x", logprobs=2)
    with pytest.raises(openai.UnprocessableEntityError, match="temperature"):
        oa.completions.create(model="tiny-oa", prompt="x", temperature=0)
    with pytest.raises(openai.UnprocessableEntityError, match="stop"):
        oa.completions.create(model="tiny-oa", prompt="x", stop=["a", "b", "c", "d", "e"])
