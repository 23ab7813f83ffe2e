"""The HTTP API on a tiny model: generation, validation errors, feedback, admin auth, experiments through
the API, readiness with a model that fails to load, metrics, and batching of concurrent requests."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from sqlalchemy import select

from conftest import quick
from tweetforge.db.schema import feedback, generations
from tweetforge.registry.versions import register
from tweetforge.serving.app import create_app
from tweetforge.serving.service import Service, ServiceSettings
from tweetforge.training.train import train

TOKEN = "s3cret-admin"


@pytest.fixture(scope="module")
def served(tiny_gpt2, store):
    home, engine, trump, _ = store
    versions = [register(engine, home / "models", train(quick(tiny_gpt2, max_steps=2, name="tiny-serve"), trump, home), trump)
                for _ in range(2)]
    service = Service(engine, ServiceSettings(models=["tiny-serve:1", "tiny-serve:2", "no-such-model"], max_batch=16, max_wait_ms=50))
    service.load()
    client = TestClient(create_app(service, admin_token=TOKEN, rate_limit_per_minute=1000))
    yield client, service, engine, versions
    for loaded in service.loaded():
        loaded.batcher.stop()


def test_generate_returns_marked_posts_and_logs_them(served):
    client, _, engine, _ = served
    response = client.post("/v1/generate", json={"model": "tiny-serve:2", "prompt": "The", "n": 3, "seed": 5})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "tiny-serve" and body["version"] == 2 and body["user_id"].startswith("anon-")
    assert len(body["posts"]) + body["dropped"] == 3
    assert all(p["generated"] is True and p["text"].startswith("The") and len(p["text"]) <= 280 for p in body["posts"])
    again = client.post("/v1/generate", json={"model": "tiny-serve:2", "prompt": "The", "n": 3, "seed": 5}).json()
    assert [p["text"] for p in again["posts"]] == [p["text"] for p in body["posts"]]  # a seed runs in its own batch
    with engine.connect() as conn:
        logged = conn.execute(select(generations.c.posts).where(generations.c.id == body["generation_id"])).scalar()
    assert [p["text"] for p in logged] == [p["text"] for p in body["posts"]]


def test_validation_and_unknown_model_errors_are_structured(served):
    client, *_ = served
    response = client.post("/v1/generate", json={"model": "tiny-serve", "n": 11, "prompt": "x" * 281})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_error" and {f["field"] for f in error["fields"]} == {"n", "prompt"}
    missing = client.post("/v1/generate", json={"model": "nobody"})
    assert missing.status_code == 404 and "no model named 'nobody'" in missing.json()["error"]["message"]
    assert client.post("/v1/feedback", json={"generation_id": "nope", "event": "like"}).status_code == 404


def test_feedback_is_committed_before_it_is_acknowledged(served):
    client, _, engine, _ = served
    generation = client.post("/v1/generate", json={"model": "tiny-serve", "n": 1}).json()["generation_id"]
    ack = client.post("/v1/feedback", json={"generation_id": generation, "event": "like", "user_id": "u1"})
    assert ack.status_code == 200 and ack.json()["committed"] is True
    with engine.connect() as conn:
        row = conn.execute(select(feedback).where(feedback.c.id == ack.json()["id"])).one()
    assert (row.generation_id, row.event, row.user_id) == (generation, "like", "u1")


def test_admin_needs_the_token_and_experiments_work_through_the_api(served):
    client, service, _, versions = served
    spec = {"name": "api-exp", "variants": ["a=tiny-serve:1:50", "b=tiny-serve:2:50"], "metric": "like", "min_sample": 10}
    assert client.post("/v1/experiments", json=spec).status_code == 401
    assert client.post("/v1/experiments", json=spec, headers={"Authorization": "Bearer wrong"}).status_code == 401
    closed = TestClient(create_app(service, admin_token=None)).post("/v1/experiments", json=spec)
    assert closed.status_code == 403 and "TWEETFORGE_ADMIN_TOKEN" in closed.json()["error"]["message"]
    created = client.post("/v1/experiments", json=spec, headers={"Authorization": f"Bearer {TOKEN}"})
    assert created.status_code == 201, created.text

    seen = {}
    for user in ("alice", "bob", "carol", "dave", "erin", "frank"):
        first = client.post("/v1/generate", json={"model": "api-exp", "user_id": user}).json()
        second = client.post("/v1/generate", json={"model": "api-exp", "user_id": user}).json()
        assert first["experiment"] == "api-exp" and first["variant"] == second["variant"]  # sticky
        seen[user] = first["variant"]
    assert set(seen.values()) == {"a", "b"}
    status = client.get("/v1/experiments/api-exp").json()
    assert sum(v["exposures"] for v in status["variants"]) == 12 and status["state"] == "collecting"
    stopped = client.post("/v1/experiments/api-exp/stop", headers={"Authorization": f"Bearer {TOKEN}"})
    assert stopped.status_code == 200 and stopped.json()["status"] == "stopped"


def test_readiness_names_the_model_that_failed_and_the_rest_serve(served):
    client, *_ = served
    ready = client.get("/readyz")
    assert ready.status_code == 503
    body = ready.json()
    assert body["loaded"] == ["tiny-serve:1", "tiny-serve:2"] and "no model named 'no-such-model'" in body["failed"]["no-such-model"]
    assert client.get("/healthz").json() == {"status": "ok"}
    models = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert models["tiny-serve:1"]["loaded"] and models["tiny-serve:1"]["authors"] == ["realDonaldTrump"]


def test_concurrent_requests_share_batches_and_metrics_show_it(served):
    client, service, _, _ = served
    batcher = next(m for m in service.loaded() if m.version.ref == "tiny-serve:1").batcher
    def batch_metrics() -> dict[str, float]:
        text = client.get("/metrics").text
        return {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line.startswith("tweetforge_batch_posts_")}

    before, measured_before = batcher.stats, batch_metrics()
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: client.post("/v1/generate", json={"model": "tiny-serve:1", "n": 2}).status_code, range(16)))
    assert codes == [200] * 16
    steps, rows = batcher.stats.batches - before.batches, batcher.stats.posts - before.posts
    assert rows / steps > 2  # decoding steps carried posts of several requests at once
    assert 'tweetforge_requests_total{path="/v1/generate",status="200"}' in client.get("/metrics").text
    measured = {k: v - measured_before.get(k, 0.0) for k, v in batch_metrics().items()}
    assert measured["tweetforge_batch_posts_count"] == steps and measured["tweetforge_batch_posts_sum"] == rows  # every step measured


def parse_sse(text: str) -> list[tuple[str, dict]]:
    import json

    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


@pytest.mark.parametrize("seed", [3, None], ids=["seeded: runs alone", "unseeded: shares the batch"])
def test_streaming_sends_tokens_then_the_posts_and_their_generation_id(served, seed):
    client, _, engine, _ = served
    body = {"model": "tiny-serve:1", "prompt": "The", "n": 2} | ({"seed": seed} if seed is not None else {})
    with client.stream("POST", "/v1/generate/stream", json=body) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        events = parse_sse("".join(response.iter_text()))
    names = [e for e, _ in events]
    assert names[0] == "start" and names[-1] == "done" and names.count("post") + events[-1][1]["dropped"] == 2
    done = events[-1][1]
    for post in (p for e, p in events if e == "post"):
        streamed = "".join(d["text"] for e, d in events if e == "token" and d["post"] == post["post"])
        assert post["generated"] is True and post["text"] and streamed.strip().startswith(post["text"])
    with engine.connect() as conn:
        logged = conn.execute(select(generations.c.posts).where(generations.c.id == done["generation_id"])).scalar()
    assert [p["text"] for p in logged] == [p["text"] for p in done["posts"]]
    missing = client.post("/v1/generate/stream", json={"model": "nobody"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_model"


def test_graphql_queries_and_mutations_use_the_same_service(served):
    client, _, engine, _ = served
    mutation = 'mutation { generate(model: "tiny-serve:1", prompt: "Hi", n: 2, seed: 1) { generationId model version posts { text generated } } }'
    response = client.post("/graphql", json={"query": mutation})
    assert response.status_code == 200 and "errors" not in response.json(), response.text
    generated = response.json()["data"]["generate"]
    assert generated["model"] == "tiny-serve" and all(p["generated"] and p["text"].startswith("Hi") for p in generated["posts"])
    ack = client.post("/graphql", json={"query": 'mutation($id: String!) { feedback(generationId: $id, event: "share") { id committed } }',
                                        "variables": {"id": generated["generationId"]}}).json()
    assert ack["data"]["feedback"]["committed"] is True
    with engine.connect() as conn:
        assert conn.execute(select(feedback.c.event).where(feedback.c.id == ack["data"]["feedback"]["id"])).scalar() == "share"
    bad = client.post("/graphql", json={"query": 'mutation { generate(model: "tiny-serve", n: 50) { generationId } }'}).json()
    assert "n: Input should be less than or equal to 10" in bad["errors"][0]["message"]
    models = client.post("/graphql", json={"query": "{ models { ref loaded } }"}).json()["data"]["models"]
    assert {"ref": "tiny-serve:1", "loaded": True} in models


def test_arena_shows_two_anonymous_posts_and_counts_the_vote(served):
    client, *_ = served
    spec = {"name": "api-arena", "variants": ["a=tiny-serve:1:1", "b=tiny-serve:2:1"], "metric": "arena", "min_sample": 5}
    assert client.post("/v1/experiments", json=spec, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 201
    shown = client.post("/v1/arena", json={"experiment": "api-arena", "user_id": "voter"}).json()
    assert len(shown["options"]) == 2 and "variant" not in str(shown)  # nothing tells the voter who wrote what
    left, right = (o["generation_id"] for o in shown["options"])
    vote = client.post("/v1/feedback", json={"generation_id": left, "event": "choice", "winner_id": right, "user_id": "voter"})
    assert vote.status_code == 200
    status = client.get("/v1/experiments/api-arena").json()
    assert sum(v["conversions"] for v in status["variants"]) == 1 and all(v["exposures"] == 1 for v in status["variants"])
    assert client.post("/v1/arena", json={"experiment": "nope"}).status_code == 404


def test_a_corrupt_model_file_is_reported_and_the_others_serve(served, tiny_gpt2, store):
    home, engine, trump, _ = store
    broken = register(engine, home / "models", train(quick(tiny_gpt2, max_steps=2, name="tiny-broken"), trump, home), trump)
    weights = broken.path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    service = Service(engine, ServiceSettings(models=[broken.ref, "tiny-serve:1"]))
    service.load()
    client = TestClient(create_app(service))
    ready = client.get("/readyz")
    assert ready.status_code == 503 and list(ready.json()["failed"]) == [broken.ref] and ready.json()["loaded"] == ["tiny-serve:1"]
    assert client.post("/v1/generate", json={"model": "tiny-serve:1"}).status_code == 200
    for loaded in service.loaded():
        loaded.batcher.stop()


def test_every_acknowledged_feedback_survives_kill_9(served, store, tmp_path):
    import os
    import signal
    import socket
    import subprocess
    import sys
    import threading
    import time

    import httpx

    from tweetforge.experiments.ab import log_generation

    home, engine, _, _ = store
    generation = log_generation(engine, "tiny-serve", 1, "", {}, [])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "TWEETFORGE_HOME": str(home)}
    env.pop("TWEETFORGE_DATABASE_URL", None)
    server = subprocess.Popen([sys.executable, "-m", "tweetforge", "serve", "--port", str(port), "--model", "tiny-serve:1"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    acknowledged: list[int] = []

    def send() -> None:
        with httpx.Client(timeout=5) as http:
            while True:
                try:
                    response = http.post(f"{url}/v1/feedback", json={"generation_id": generation, "event": "like"})
                except httpx.TransportError:
                    return  # the server is gone
                if response.status_code == 200:
                    acknowledged.append(response.json()["id"])

    senders = [threading.Thread(target=send) for _ in range(4)]
    for t in senders:
        t.start()
    deadline = time.monotonic() + 120
    while len(acknowledged) < 200 and time.monotonic() < deadline:
        time.sleep(0.01)
    server.send_signal(signal.SIGKILL)
    server.wait()
    for t in senders:
        t.join()
    with engine.connect() as conn:
        stored = set(conn.execute(select(feedback.c.id).where(feedback.c.generation_id == generation)).scalars())
    assert len(acknowledged) >= 200, server.stderr.read().decode()[-2000:]
    assert set(acknowledged) <= stored


def test_stopping_a_batcher_serves_what_was_queued(served):
    from tweetforge.generation.generate import Job, Sampling
    from tweetforge.serving.batching import Batcher

    _, service, _, _ = served
    loaded = service.loaded()[0]
    batcher = Batcher(loaded.model, loaded.tokenizer, max_new_tokens=16, max_batch=2, max_wait_ms=1)
    futures = [batcher.submit(Job((loaded.tokenizer.eos_token_id,), "", 1), Sampling()) for _ in range(6)]
    batcher.stop()
    assert all(len(f.result(timeout=1)) == 1 for f in futures)


def test_no_request_the_schema_allows_makes_a_server_error(served):
    """schemathesis: at most 15 generated requests for each operation in /openapi.json; 0 server errors."""
    from hypothesis import given

    schema = schemathesis.openapi.from_asgi("/openapi.json", served[0].app)
    operations = [result.ok() for result in schema.get_all_operations()]
    operations = [op for op in operations if op.path != "/readyz"]  # answers 503 by design here: a model failed to load
    assert len(operations) >= 10
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case) -> None:
            case.call_and_validate(checks=[not_a_server_error])

        fuzz()


def test_a_cancelled_request_leaves_the_queue_unsampled(served):
    import threading

    from tweetforge.generation.generate import Job, Sampling
    from tweetforge.serving.batching import Batcher, ClientGone

    _, service, _, _ = served
    loaded = service.loaded()[0]
    batcher = Batcher(loaded.model, loaded.tokenizer, max_new_tokens=16, max_batch=1, max_wait_ms=1)
    batcher.stop()  # no worker: requests wait in the queue
    job = Job((loaded.tokenizer.eos_token_id,), "", 1)
    kept = batcher.submit(job, Sampling())
    gone = threading.Event()
    gone.set()
    with pytest.raises(ClientGone):
        batcher.draw(job, Sampling(), None, cancelled=gone)
    batcher._run()  # a worker pass over the queue: samples the waiting request, skips the withdrawn one
    assert len(kept.result(timeout=1)) == 1 and batcher.stats.posts == 1


def test_feedback_through_the_api_auto_promotes_a_conclusive_winner(served, monkeypatch):
    import tweetforge.serving.service as service_module
    from tweetforge.experiments.ab import (
        create_experiment,
        get_experiment,
        log_generation,
    )
    from tweetforge.registry.versions import resolve

    client, _, engine, versions = served
    monkeypatch.setattr(service_module, "DECISION_INTERVAL_S", 0.0)
    create_experiment(engine, "auto", [("a", versions[0].ref, 1), ("b", versions[1].ref, 1)], min_sample=100, auto_promote=True)
    liked = []
    for i in range(150):
        for variant, version, rate_in_10 in (("a", versions[0], 1), ("b", versions[1], 5)):
            generation = log_generation(engine, version.name, version.version, "", {}, [], experiment="auto", variant=variant)
            if i % 10 < rate_in_10:
                liked.append(generation)
    for generation in liked:
        assert client.post("/v1/feedback", json={"generation_id": generation, "event": "like"}).status_code == 200
    assert get_experiment(engine, "auto").status == "decided" and get_experiment(engine, "auto").winner == "b"
    assert resolve(engine, "tiny-serve:champion").version == versions[1].version


def test_a_new_champion_is_swapped_in_under_load_without_a_failed_request(served, store):
    """Last in this file: it moves tiny-serve's champion alias."""
    import threading
    import time

    from tweetforge.registry.versions import set_alias

    _, _, engine, _ = served
    set_alias(engine, "tiny-serve:1", "champion")
    service = Service(engine, ServiceSettings(models=["tiny-serve"], max_batch=16, max_wait_ms=20))
    service.load()
    service.watch_registry(every_s=0.1)
    client = TestClient(create_app(service, rate_limit_per_minute=0))
    answers: list[tuple[int, int | None]] = []
    done = threading.Event()

    def keep_asking() -> None:
        while not done.is_set():
            r = client.post("/v1/generate", json={"model": "tiny-serve", "prompt": "The", "n": 1})
            answers.append((r.status_code, r.json().get("version")))

    clients = [threading.Thread(target=keep_asking) for _ in range(4)]
    for t in clients:
        t.start()
    try:
        deadline = time.monotonic() + 10
        while len(answers) < 8:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        set_alias(engine, "tiny-serve:2", "champion")  # what watch or promote does
        deadline = time.monotonic() + 60
        while [m.version.ref for m in service.loaded()] != ["tiny-serve:2"]:
            assert time.monotonic() < deadline, "the registry watcher did not swap the new champion in"
            time.sleep(0.05)
        switched = len(answers)
        while len(answers) < switched + 8:
            time.sleep(0.05)
    finally:
        done.set()
        for t in clients:
            t.join()
        service.stop_watching()
    assert all(status == 200 for status, _ in answers), [a for a in answers if a[0] != 200][:3]
    versions = [v for _, v in answers]
    assert versions[0] == 1 and set(versions[-4:]) == {2}
    shown = {m["id"]: m for m in client.get("/v1/models").json()["data"] if m["name"] == "tiny-serve"}
    assert "champion" in shown["tiny-serve:2"]["aliases"] and shown["tiny-serve:2"]["loaded"] and not shown["tiny-serve:1"]["loaded"]
