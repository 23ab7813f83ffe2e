"""The service under abuse: bodies too large or too slow (chunked or not), heads sent a byte at a time,
malformed GraphQL, GraphQL bounded like REST, a rate limit that neither a forged X-Forwarded-For nor a new
user_id resets, CORS closed unless configured, the admin token kept out of logs, metrics and answers,
schemathesis at 200 examples per operation and in its stateful mode, and 64 clients for 30 s.

Most cases run against `tweetforge serve` in a subprocess on loopback, so its memory is measured apart
from the test's and the server is configured as a user runs it."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from conftest import free_port, quick, wait_ready
from tweetforge.config import Settings
from tweetforge.registry.versions import register
from tweetforge.serving.app import create_app
from tweetforge.serving.limits import Limits
from tweetforge.serving.service import Service, ServiceSettings
from tweetforge.training.train import train

TOKEN = "adm-7f3c1d9e5b2a4c6f8e0d1a3b5c7e9f21"
MODEL = "tiny-abuse:1"


@pytest.fixture(scope="module")
def service(tiny_gpt2, store):
    home, engine, trump, _ = store
    register(engine, home / "models", train(quick(tiny_gpt2, max_steps=2, name="tiny-abuse"), trump, home), trump)
    service = Service(engine, ServiceSettings(models=[MODEL], max_batch=16, max_wait_ms=20))
    service.load()
    yield service
    for loaded in service.loaded():
        loaded.batcher.stop()


def client_of(service: Service, peer: str = "192.0.2.10", **options) -> TestClient:
    """The app in-process, as if the TCP peer were `peer`."""
    return TestClient(create_app(service, **options), client=(peer, 40000))


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]) / 1024


class Served:
    """`tweetforge serve` on a free loopback port, its stdout and stderr in a file."""

    def __init__(self, home: Path, log: Path, *args: str, env: dict[str, str] | None = None):
        self.port, self.log = free_port(), log
        self.url = f"http://127.0.0.1:{self.port}"
        variables = {**os.environ, "TWEETFORGE_HOME": str(home), **(env or {})}
        variables.pop("TWEETFORGE_DATABASE_URL", None)
        with log.open("wb") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "tweetforge", "serve", "--port", str(self.port), "--model", MODEL, *args],
                                            env=variables, stdout=out, stderr=subprocess.STDOUT, cwd=home.parent)
        wait_ready(self.url, self.process, log)

    def rss(self) -> float:
        return rss_mb(self.process.pid)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def server(service, store, tmp_path_factory):
    """With the web UI, the admin token set, 6 generation requests a minute, 2 s to send a head or a body."""
    home = store[0]
    served = Served(home, tmp_path_factory.mktemp("serve") / "serve.log", "--header-timeout", "2", "--body-timeout", "2",
                    env={"TWEETFORGE_ADMIN_TOKEN": TOKEN, "TWEETFORGE_RATE_LIMIT_PER_MINUTE": "6"})
    yield served
    served.stop()


def chunked(total: int, piece: int = 64 * 1024):
    """A body without Content-Length: httpx sends a generator with Transfer-Encoding: chunked."""
    for _ in range(total // piece):
        yield b"x" * piece


def test_a_chunked_10_mb_body_is_refused_fast_and_the_server_memory_stays_flat(server):
    for _ in range(3):  # warm: the first requests of each route allocate for good
        httpx.post(f"{server.url}/v1/feedback", json={"generation_id": "none", "event": "like"})
        httpx.post(f"{server.url}/graphql", json={"query": "{ models { ref } }"})
    before = server.rss()
    timings = []
    for path in ("/v1/feedback", "/graphql") * 5:
        started = time.perf_counter()
        response = httpx.post(server.url + path, content=chunked(10 << 20), headers={"content-type": "application/json"}, timeout=10)
        timings.append(time.perf_counter() - started)
        assert response.status_code == 413 and response.json()["error"]["code"] == "too_large", response.text
        assert "65536" in response.json()["error"]["message"]
    declared = httpx.post(f"{server.url}/v1/feedback", content=b"{" * (10 << 20), headers={"content-type": "application/json"}, timeout=10)
    assert declared.status_code == 413 and declared.json()["error"]["code"] == "too_large"
    huge = httpx.post(f"{server.url}/v1/feedback", content=chunked(200 << 20), headers={"content-type": "application/json"}, timeout=10)
    assert huge.status_code == 413
    after = server.rss()
    print(f"413 latency max {max(timings) * 1000:.0f} ms; server RSS {before:.1f} -> {after:.1f} MB")
    assert max(timings) < 1.0
    assert after - before < 10, f"server RSS grew from {before:.1f} to {after:.1f} MB"


def test_malformed_graphql_bodies_are_400_json(service):
    client = client_of(service)
    for body, said in ((b'{"query": "{ models { ref } }\xff"}', "UTF-8"), (b"\xfe\xff\x00{", "UTF-8"), (b"[" * 50_000, "JSON"),
                       (b"5", "JSON object"), (b'"query"', "JSON object")):
        response = client.post("/graphql", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 400, (body[:20], response.text)
        assert response.json()["error"]["code"] == "bad_graphql_request" and said in response.json()["error"]["message"]
    batch = client.post("/graphql", json=[{"query": "{ models { ref } }"}] * 3)
    assert batch.status_code == 400 and batch.json()["error"]["code"] == "bad_graphql_request"
    rest = client.post("/v1/feedback", content=b'{"generation_id": "\xff"}', headers={"content-type": "application/json"})
    assert rest.status_code == 400 and rest.json()["error"]["code"] == "bad_request"


def test_a_version_written_with_a_non_ascii_digit_is_a_404_not_a_500(service):
    client = client_of(service)
    for ref in ("tiny-abuse:²", "tiny-abuse:١", "tiny-abuse:½"):
        for path, body in (("/v1/generate", {"model": ref}), ("/v1/completions", {"model": ref})):
            response = client.post(path, json=body)
            assert response.status_code == 404 and response.json()["error"]["code"] == "unknown_model", response.text
        errors = client.post("/graphql", json={"query": "mutation($m: String!) { generate(model: $m) { generationId } }",
                                               "variables": {"m": ref}}).json()["errors"]
        assert errors[0]["extensions"] == {"code": "BAD_USER_INPUT", "reason": "unknown_model", "status": 404}


def test_graphql_refuses_documents_over_its_limits_naming_the_limit(service):
    client = client_of(service)

    def errors_of(query: str, **extra) -> list[str]:
        response = client.post("/graphql", json={"query": query, **extra})
        assert response.status_code == 200, response.text
        return [e["message"] for e in response.json()["errors"]]

    deep = "{ models " + "{ ref " * 12 + "}" * 13
    assert any("exceeds maximum operation depth of 10" in m for m in errors_of(deep))
    aliased = "mutation { " + " ".join(f'g{i}: generate(model: "{MODEL}") {{ generationId }}' for i in range(11)) + " }"
    assert errors_of(aliased) == ["11 aliases found. Allowed: 10"]
    many = " ".join(f"query q{i} {{ models {{ ref }} }}" for i in range(6))
    assert errors_of(many, operationName="q1") == ["6 operations in one document; the limit is 5"]
    long = "{ models { " + "ref " * 2500 + "} }"
    assert any("more than 2000 tokens" in m for m in errors_of(long))
    small = Limits.of(Settings(), graphql_max_depth=1, graphql_max_aliases=0, graphql_max_operations=1, graphql_max_tokens=30)
    tight = client_of(service, limits=small).post("/graphql", json={"query": '{ experiment(name: "x") { variants { variant } } }'})
    assert "exceeds maximum operation depth of 1" in tight.text
    assert client.post("/graphql", json={"query": "{ models { ref } }"}).json()["data"]["models"]


def test_generation_through_graphql_and_rest_spends_one_budget(service):
    client = client_of(service, rate_limit_per_minute=5)
    mutation = f'mutation {{ a: generate(model: "{MODEL}", n: 1) {{ generationId }} b: generate(model: "{MODEL}") {{ generationId }} }}'
    both = client.post("/graphql", json={"query": mutation}).json()
    assert "errors" not in both and both["data"]["a"]["generationId"] != both["data"]["b"]["generationId"]  # two of five
    assert client.post("/v1/generate", json={"model": MODEL}).status_code == 200
    assert client.post("/v1/completions", json={"model": MODEL, "max_tokens": 3}).status_code == 200
    assert client.post("/v1/generate/stream", json={"model": MODEL}).status_code == 200  # five
    refused = client.post("/graphql", json={"query": f'mutation {{ generate(model: "{MODEL}") {{ generationId }} }}'}).json()
    assert refused["errors"][0]["extensions"]["reason"] == "rate_limited" and refused["data"] is None
    limited = client.post("/v1/generate", json={"model": MODEL})
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert client.post("/graphql", json={"query": "{ models { ref } }"}).json()["data"]["models"]  # reading is not generating


def test_neither_a_forged_forwarded_for_nor_a_new_user_id_resets_the_limit(service):
    client = client_of(service, rate_limit_per_minute=3)
    answers = [client.post("/v1/generate", json={"model": MODEL, "user_id": f"user-{i}"},
                           headers={"X-Forwarded-For": f"198.51.100.{i}"}).status_code for i in range(4)]
    answers.append(client.post("/v1/completions", json={"model": MODEL, "user": "someone-else", "max_tokens": 2}).status_code)
    assert answers == [200, 200, 200, 429, 429]


def test_forwarded_for_counts_only_from_a_trusted_proxy(service):
    proxy = client_of(service, peer="10.1.2.3", rate_limit_per_minute=2, trusted_proxies=["10.0.0.0/8"])

    def status(forwarded_for: str) -> int:
        return proxy.post("/v1/generate", json={"model": MODEL}, headers={"X-Forwarded-For": forwarded_for}).status_code

    assert [status("203.0.113.1") for _ in range(3)] == [200, 200, 429]
    assert status("203.0.113.2") == 200  # another client behind the same proxy has its own budget
    # a client's own X-Forwarded-For is kept on the left by its proxy; the address the proxy saw is the client
    assert [status(f"1.1.1.{i}, 10.9.9.9, 203.0.113.2") for i in range(2)] == [200, 429]
    untrusted = client_of(service, peer="10.1.2.3", rate_limit_per_minute=2)  # no proxies configured: the peer is the client
    assert [untrusted.post("/v1/generate", json={"model": MODEL}, headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code
            for i in range(3)] == [200, 200, 429]


def test_a_forged_forwarded_for_from_loopback_does_not_reset_the_served_limit(server):
    """uvicorn believes X-Forwarded-For from 127.0.0.1 by default; serve turns that off."""
    started, statuses = time.monotonic(), []
    for i in range(10):
        statuses.append(httpx.post(f"{server.url}/v1/generate", json={"model": MODEL, "user_id": f"u{i}", "max_chars": 20},
                                   headers={"X-Forwarded-For": f"203.0.113.{i}"}, timeout=30).status_code)
    refilled = int((time.monotonic() - started) / 10)  # 6 a minute: one more every 10 s
    assert statuses.count(200) <= 6 + refilled and statuses.count(429) >= 4 - refilled, statuses


def test_cors_is_closed_unless_origins_are_configured(service):
    preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    closed = client_of(service)
    assert "access-control-allow-origin" not in closed.options("/v1/generate", headers=preflight).headers
    assert "access-control-allow-origin" not in closed.get("/v1/models", headers={"Origin": "https://evil.example"}).headers
    opened = client_of(service, cors_origins=["https://app.example"])
    allowed = opened.get("/v1/models", headers={"Origin": "https://app.example"})
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in opened.get("/v1/models", headers={"Origin": "https://evil.example"}).headers
    refused = opened.post("/v1/feedback", content=b"x" * 70_000, headers={"Origin": "https://app.example"})
    assert refused.status_code == 413 and refused.headers["access-control-allow-origin"] == "https://app.example"  # readable refusals


class Slow:
    """Connections that send a byte every `every` seconds: of the request head, or of a promised body."""

    def __init__(self, port: int, heads: int, bodies: int, every: float = 0.25):
        self.sockets: list[socket.socket] = []
        self.pending: list[bytes] = []
        for i in range(heads + bodies):
            s = socket.create_connection(("127.0.0.1", port))
            s.setblocking(False)
            if i < heads:
                self.pending.append(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000)
            else:
                s.sendall(b"POST /v1/feedback HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
                self.pending.append(b"{" + b" " * 998)
            self.sockets.append(s)
        self.closed_at: dict[int, float] = {}
        self.answers: dict[int, bytes] = {}
        self.started, self.every = time.monotonic(), every
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._drip, daemon=True)
        self.thread.start()

    def _drip(self) -> None:
        while not self.done.is_set() and len(self.closed_at) < len(self.sockets):
            for i, s in enumerate(self.sockets):
                if i in self.closed_at:
                    continue
                try:
                    answer = s.recv(4096)
                    self.answers[i] = self.answers.get(i, b"") + answer
                    if not answer:
                        self.closed_at[i] = time.monotonic() - self.started
                        continue
                except BlockingIOError:
                    pass
                except OSError:
                    self.closed_at[i] = time.monotonic() - self.started
                    continue
                try:
                    if self.pending[i]:
                        s.send(self.pending[i][:1])
                        self.pending[i] = self.pending[i][1:]
                except OSError:
                    pass
            time.sleep(self.every)

    def close(self) -> None:
        self.done.set()
        self.thread.join()
        for s in self.sockets:
            s.close()


def test_slow_clients_holding_100_connections_neither_stop_others_nor_stay(server):
    slow = Slow(server.port, heads=50, bodies=50)
    latencies = []
    try:
        with httpx.Client(timeout=10) as client:
            while time.monotonic() - slow.started < 1.8:  # while every slow connection is still open
                for method, path, body in (("GET", "/healthz", None), ("GET", "/v1/models", None),
                                           ("POST", "/v1/feedback", {"generation_id": "none", "event": "like"})):
                    started = time.perf_counter()
                    response = client.request(method, server.url + path, json=body)
                    latencies.append(time.perf_counter() - started)
                    assert response.status_code in (200, 404), response.text
        deadline = time.monotonic() + 10
        while len(slow.closed_at) < 100 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        slow.close()
    print(f"{len(latencies)} requests beside 100 slow connections: max {max(latencies) * 1000:.0f} ms; "
          f"slow ones closed after {min(slow.closed_at.values()):.1f}-{max(slow.closed_at.values()):.1f} s")
    assert max(latencies) < 1.0
    assert len(slow.closed_at) == 100 and 1.5 < min(slow.closed_at.values()) and max(slow.closed_at.values()) < 5
    assert all(answer.startswith(b"HTTP/1.1 408 ") and b"request_timeout" in answer for answer in slow.answers.values())


def test_an_oversized_request_head_is_refused(server):
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + (b"X-Pad: " + b"a" * 1000 + b"\r\n") * 66)
        answer = s.recv(4096)
    assert answer.startswith(b"HTTP/1.1 431 ") and b"head_too_large" in answer


def test_the_admin_token_is_never_logged_measured_or_answered(server):
    seen = []
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for token in ("wrong", TOKEN[:-1], TOKEN):
            reload = client.post("/v1/models/reload", headers={"Authorization": f"Bearer {token}"})
            assert reload.status_code == (200 if token == TOKEN else 401)
            seen.append(reload)
        seen.append(client.post("/v1/experiments", json={"name": "x", "variants": ["a"]}, headers={"Authorization": f"Bearer {TOKEN}"}))
        seen += [client.get(path) for path in ("/metrics", "/", "/config", "/gradio_api/info", "/openapi.json", "/readyz")]
        seen.append(client.post("/graphql", json={"query": "{ __schema { types { name } } }"}, headers={"Authorization": f"Bearer {TOKEN}"}))
    assert seen[3].status_code == 422 and seen[4].status_code == 200
    for response in seen:
        assert TOKEN not in response.text and all(TOKEN not in value for value in response.headers.values()), response.url
    time.sleep(0.5)  # the log is written by another process
    assert TOKEN not in server.log.read_text(errors="replace")


@pytest.mark.slow
def test_no_request_schemathesis_makes_is_a_server_error(service):
    """200 examples per REST and GraphQL operation, then the stateful mode, which chains operations by
    their links (models → generate or completions → feedback, experiments → stop or promote)."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error

    app = create_app(service, admin_token=TOKEN, rate_limit_per_minute=0)
    ADMIN = {"Authorization": f"Bearer {TOKEN}"}  # admin routes fuzzed beyond their 401
    rest = schemathesis.openapi.from_asgi("/openapi.json", app)
    graphql = schemathesis.graphql.from_asgi("/graphql", app)
    counts: Counter[str] = Counter()
    statuses: list[int] = []
    for api, schema in (("REST", rest), ("GraphQL", graphql)):
        operations = [result.ok() for result in schema.get_all_operations()]
        for operation in operations:
            if operation.label.endswith("/readyz"):
                continue

            @given(case=operation.as_strategy())
            @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def fuzz(case) -> None:
                response = case.call_and_validate(checks=[not_a_server_error], headers=ADMIN)
                statuses.append(response.status_code)

            fuzz()
            counts.update(f"{api} {status // 100}xx" for status in statuses)
            statuses.clear()
    stateful: Counter[str] = Counter()

    class Machine(rest.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case) -> dict:
            return {"headers": ADMIN}

        def validate_response(self, response, case, additional_checks=None, **kwargs) -> None:
            stateful[f"{response.status_code // 100}xx"] += 1
            case.validate_response(response, checks=[not_a_server_error], transport_kwargs=kwargs)

    Machine.run(settings=settings(max_examples=100, stateful_step_count=6, deadline=None, suppress_health_check=list(HealthCheck),
                                  database=None))
    print(f"schemathesis: {sum(counts.values())} requests {dict(counts)}; stateful ({rest.statistic.transitions.selected} links): "
          f"{sum(stateful.values())} requests {dict(stateful)}")
    assert not any(key.endswith("5xx") for key in counts) and stateful["5xx"] == 0 and stateful["2xx"] > 0


@pytest.mark.slow
def test_64_clients_for_30_s_get_answers_or_fast_refusals_and_memory_returns(service, store, tmp_path):
    """Behind a trusted proxy (X-Forwarded-For): 32 clients with an address each, 32 sharing one address and
    its budget of 60 generations a minute. The server is given one core for its model (OMP_NUM_THREADS=1), the
    load generator the other: oversubscribed, torch's threads spin and the server answers a quarter as many."""
    server = Served(store[0], tmp_path / "serve.log", "--no-ui", "--trusted-proxy", "127.0.0.1",
                    env={"OMP_NUM_THREADS": "1", "TWEETFORGE_RATE_LIMIT_PER_MINUTE": "60"})
    requests = (("POST", "/v1/generate", {"model": MODEL, "max_chars": 40}),
                ("POST", "/graphql", {"query": f'mutation {{ generate(model: "{MODEL}", maxChars: 40) {{ generationId }} }}'}),
                ("POST", "/v1/feedback", {"generation_id": "none", "event": "like"}),
                ("GET", "/v1/models", None))
    results: list[tuple[int, float, int]] = []  # (status, seconds, kind)

    def status_of(response: httpx.Response) -> int:
        """GraphQL answers 200 with errors: a refusal's status is in their extensions."""
        errors = response.json().get("errors") if path_of(response) == "/graphql" and response.status_code == 200 else None
        return errors[0]["extensions"].get("status", 500) if errors else response.status_code

    def path_of(response: httpx.Response) -> str:
        return response.request.url.path

    async def one_client(i: int, until: float) -> None:
        address = f"203.0.113.{i}" if i % 2 else "198.51.100.1"
        async with httpx.AsyncClient(base_url=server.url, timeout=60, headers={"X-Forwarded-For": address}) as client:
            n = i
            while time.monotonic() < until:
                method, path, body = requests[n % len(requests)]
                started = time.perf_counter()
                try:
                    response = await client.request(method, path, json=body)
                    results.append((status_of(response), time.perf_counter() - started, n % len(requests)))
                except httpx.TransportError:
                    results.append((0, time.perf_counter() - started, n % len(requests)))
                n += 1

    async def load(clients: int, seconds: float) -> None:
        until = time.monotonic() + seconds
        await asyncio.gather(*(one_client(i, until) for i in range(clients)))

    try:
        asyncio.run(load(8, 3))  # warm: every route and the batcher have run
        time.sleep(2)
        before = server.rss()
        results.clear()
        asyncio.run(load(64, 30))
        time.sleep(5)
        after = server.rss()
    finally:
        server.stop()
    statuses = Counter(status for status, _, _ in results)
    latencies = sorted(seconds for _, seconds, _ in results)
    refusals = sorted(seconds for status, seconds, _ in results if status in (429, 503))
    p50, p99 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)]
    print(f"64 clients x 30 s: {len(results)} requests, statuses {dict(statuses)}, p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
          f"refusals p99 {refusals[int(len(refusals) * 0.99)] * 1000 if refusals else 0:.0f} ms; RSS {before:.0f} -> {after:.0f} MB")
    for kind, (method, path, _) in enumerate(requests):
        mine = sorted(seconds for _, seconds, k in results if k == kind)
        print(f"  {method} {path}: {len(mine)} requests, {dict(Counter(st for st, _, k in results if k == kind))}, "
              f"p50 {mine[len(mine) // 2] * 1000:.0f} ms, p99 {mine[int(len(mine) * 0.99)] * 1000:.0f} ms")
    assert set(statuses) <= {200, 404, 429, 503}, statuses  # no 5xx but overloaded (503), no connection lost or timed out
    assert statuses[200] > 0 and statuses[429] > 0 and refusals[int(len(refusals) * 0.99)] < 1.0
    assert after - before < 40, f"server RSS {before:.0f} MB before the load, {after:.0f} MB after"
