"""API replicas sharing one PostgreSQL store: two `tweetforge serve` processes on two ports give a user the
same variant, count feedback from either, both pick up a new champion, one that loses the database answers
503 and recovers when it is back, and one killed with SIGKILL leaves the other serving. An experiment
decided by two replicas at the same moment is promoted once. Skipped without TWEETFORGE_TEST_POSTGRES_URL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from conftest import free_port, quick, shared, wait_ready
from test_postgres import URL, drop_everything

pytestmark = pytest.mark.skipif(not URL, reason="TWEETFORGE_TEST_POSTGRES_URL is not set (CI sets it)")


@pytest.fixture
def pg_home(tmp_path, tiny_gpt2):
    """A PostgreSQL store with two versions of tiny-rep (trained on Trump's archive) and an experiment."""
    from tweetforge.data.ingest import ingest
    from tweetforge.data.snapshots import SnapshotRequest, create_snapshot
    from tweetforge.data.sources import ReadOptions, open_source
    from tweetforge.db.engine import create_store_engine
    from tweetforge.db.migrate import upgrade
    from tweetforge.experiments.ab import create_experiment
    from tweetforge.registry.versions import register
    from tweetforge.training.train import train

    drop_everything()
    engine = create_store_engine(URL)
    upgrade(engine)
    home = tmp_path / "home"
    ingest(engine, open_source(str(shared("trump_archive.csv")), None, ReadOptions(author="realDonaldTrump")))
    snapshot = create_snapshot(engine, home / "datasets", SnapshotRequest("trump-v1", ("realDonaldTrump",)))
    for _ in range(2):
        register(engine, home / "models", train(quick(tiny_gpt2, max_steps=2, name="tiny-rep"), snapshot, home), snapshot)
    create_experiment(engine, "rep-exp", [("a", "tiny-rep:1", 1), ("b", "tiny-rep:2", 1)], min_sample=10**6)
    yield home, engine
    engine.dispose()
    drop_everything()


class Proxy:
    """A TCP forwarder to the database: stopping it is the network between a replica and PostgreSQL failing."""

    def __init__(self, port: int, upstream: tuple[str, int]):
        self.port, self.upstream, self.sockets, self.stopped = port, upstream, [], False
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.stopped:  # accepted as stop() ran: the network is down for this one too
                client.close()
                return
            server = socket.create_connection(self.upstream)
            self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self) -> None:
        self.stopped = True
        try:  # close() alone does not wake a thread blocked in accept(), which would go on accepting
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        for s in self.sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass


def start_replica(home: Path, database_url: str, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "TWEETFORGE_HOME": str(home), "TWEETFORGE_DATABASE_URL": database_url}
    return subprocess.Popen([sys.executable, "-m", "tweetforge", "serve", "--no-ui", "--port", str(port), "--model", "tiny-rep:1",
                             "--model", "tiny-rep:2", "--watch-registry", "0.5"], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def test_two_replicas_share_assignments_feedback_and_champions_and_survive_each_other(pg_home, tmp_path):
    from tweetforge.db.schema import feedback
    from tweetforge.registry.versions import set_alias

    home, engine = pg_home
    upstream = make_url(URL)
    proxy = Proxy(free_port(), (upstream.host or "127.0.0.1", upstream.port or 5432))
    through_proxy = upstream.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    ports = [free_port(), free_port()]
    logs = [tmp_path / "replica-a.log", tmp_path / "replica-b.log"]
    replicas = [start_replica(home, through_proxy, ports[0], logs[0]), start_replica(home, URL, ports[1], logs[1])]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        for url, process, log in zip(urls, replicas, logs):
            wait_ready(url, process, log)
        with httpx.Client(timeout=60) as client:
            acknowledged = []
            for i in range(12):  # a client alternating between the replicas, as a load balancer would send it
                user = f"user-{i}"
                answers = [client.post(f"{url}/v1/generate", json={"model": "rep-exp", "user_id": user}).json() for url in urls]
                assert answers[0]["variant"] == answers[1]["variant"], user
                for j, answer in enumerate(answers):
                    ack = client.post(f"{urls[(i + j) % 2]}/v1/feedback", json={"generation_id": answer["generation_id"], "event": "like",
                                                                                 "user_id": user})
                    assert ack.status_code == 200, ack.text
                    acknowledged.append(ack.json()["id"])
            with engine.connect() as conn:
                stored = set(conn.execute(select(feedback.c.id).where(feedback.c.id.in_(acknowledged))).scalars())
            assert stored == set(acknowledged) and len(acknowledged) == 24

            set_alias(engine, "tiny-rep:2", "champion")  # what promote or watch does, on any machine
            for url in urls:
                assert client.post(f"{url}/v1/generate", json={"model": "tiny-rep"}).json()["version"] == 2

            proxy.stop()  # replica A loses the database
            generation = client.post(f"{urls[1]}/v1/generate", json={"model": "tiny-rep:1"}).json()["generation_id"]
            lost = client.post(f"{urls[0]}/v1/feedback", json={"generation_id": generation, "event": "like"})
            assert lost.status_code == 503 and lost.json()["error"]["code"] == "store_unavailable", lost.text
            assert lost.headers["Retry-After"] and "tweetforge:" not in lost.text  # no credentials in the answer
            assert client.post(f"{urls[1]}/v1/feedback", json={"generation_id": generation, "event": "like"}).status_code == 200
            proxy = Proxy(proxy.port, proxy.upstream)  # it is back
            back = client.post(f"{urls[0]}/v1/feedback", json={"generation_id": generation, "event": "share"})
            assert back.status_code == 200, back.text

            replicas[1].send_signal(signal.SIGKILL)
            replicas[1].wait(timeout=30)
            for _ in range(3):
                served = client.post(f"{urls[0]}/v1/generate", json={"model": "rep-exp", "user_id": "user-0"})
                assert served.status_code == 200 and served.json()["variant"] == answers_variant(engine, "user-0")
    finally:
        for process in replicas:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=30)
        proxy.stop()


def answers_variant(engine, user: str) -> str:
    from tweetforge.experiments.ab import assign, get_experiment

    return assign(get_experiment(engine, "rep-exp"), user).name


def test_replicas_deciding_at_once_promote_an_experiment_once(pg_home):
    from tweetforge.db.engine import create_store_engine
    from tweetforge.db.schema import experiment_decisions
    from tweetforge.experiments.ab import get_experiment, promote_variant
    from tweetforge.registry.versions import resolve

    home, engine = pg_home
    replicas = [create_store_engine(URL) for _ in range(4)]
    start = threading.Barrier(len(replicas))
    outcomes: list = []

    def decide(own):  # type: ignore[no-untyped-def]
        start.wait()
        outcomes.append(promote_variant(own, "rep-exp", "b").name)

    threads = [threading.Thread(target=decide, args=(e,)) for e in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert outcomes == ["b"] * 4
    with engine.connect() as conn:
        promoted = conn.execute(select(func.count()).select_from(experiment_decisions)
                                .where(experiment_decisions.c.experiment == "rep-exp", experiment_decisions.c.promoted)).scalar()
    assert promoted == 1
    assert get_experiment(engine, "rep-exp").status == "decided" and resolve(engine, "tiny-rep:champion").version == 2
    for e in replicas:
        e.dispose()


def test_serve_with_two_workers_answers_from_both_processes(pg_home, tmp_path):
    home, _ = pg_home
    port, log = free_port(), tmp_path / "workers.log"
    env = {**os.environ, "TWEETFORGE_HOME": str(home), "TWEETFORGE_DATABASE_URL": URL}
    server = subprocess.Popen([sys.executable, "-m", "tweetforge", "serve", "--no-ui", "--port", str(port), "--model", "tiny-rep:1",
                               "--workers", "2"], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, server, log)
        deadline = time.monotonic() + 90
        while log.read_text().count(": serving tiny-rep:1") < 2 and time.monotonic() < deadline:
            time.sleep(0.3)
        assert log.read_text().count(": serving tiny-rep:1") == 2, log.read_text()[-3000:]
        with httpx.Client(timeout=60) as client:
            answers = [client.post(f"{url}/v1/generate", json={"model": "tiny-rep:1", "user_id": f"w{i}"}) for i in range(10)]
        assert all(a.status_code == 200 and a.json()["posts"][0]["generated"] for a in answers if a.json()["posts"])
        assert all(a.status_code == 200 for a in answers)
    finally:
        server.terminate()
        server.wait(timeout=60)
