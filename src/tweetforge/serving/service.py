"""The service layer behind every interface (REST, streaming, GraphQL, the web UI): which model version a
request reaches (a name's champion, an exact version, or a running experiment's variant for this user),
generation through that model's batcher and the copy filter, the generation log, and feedback."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from tweetforge.errors import TweetforgeError
from tweetforge.generation.generate import (
    Job,
    Sample,
    Sampling,
    draw_without_copies,
    encode_job,
    post_prefix,
)
from tweetforge.registry.copy_index import CopyIndex
from tweetforge.registry.versions import ModelVersion

if TYPE_CHECKING:
    from tweetforge.serving.batching import Batcher
    from tweetforge.serving.lora_bank import AdapterView, LoraBank

STREAM_TIMEOUT_S = 600.0
"""A streamed post waits at most this long for its next token (the batcher ends every stream it takes)."""
DECISION_INTERVAL_S = 10.0
"""How often feedback re-checks a running experiment's decision (it reads all its events)."""


def return_freed_memory() -> None:
    """Give the heap's freed pages back to the system. Loading converts the base's weights (a bf16 file to
    float32, then column-major): its per-tensor buffers, freed, stay in glibc's heap otherwise (about
    0.5 GB of resident memory that nothing uses)."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to give back this way


class ServiceError(TweetforgeError):
    """A request the service refuses, with the HTTP status and a message a person can act on."""

    def __init__(self, status: int, code: str, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after


def overloaded(loaded: LoadedModel, exc: Exception) -> ServiceError:
    return ServiceError(503, "overloaded", f"{loaded.version.ref} is busy ({exc}); retry shortly", retry_after=1)


def store_refusal(exc: Exception) -> ServiceError:
    """The database is down, unreachable or (SQLite) busy past its timeout: the request can be retried, so
    503 rather than 500; the driver's message stays out of the answer (it names hosts and users)."""
    if "locked" in str(exc) or "busy" in str(exc):
        return ServiceError(503, "store_busy", "the store is busy with another writer; retry shortly", retry_after=2)
    return ServiceError(503, "store_unavailable", "the store (database) cannot be reached; this replica recovers by itself when it is "
                        "back, retry shortly", retry_after=5)


@dataclass
class LoadedModel:
    version: ModelVersion
    model: Any
    tokenizer: Any
    info: dict[str, Any]
    copy_index: CopyIndex
    batcher: Batcher | AdapterView
    shared_base: str | None = None
    """The base directory it shares with other adapters (served as a slot in that base's bank), or None: its own merged model."""


@dataclass
class SharedBase:
    """One base model in memory, the bank of adapters on it and the one batcher all of them decode in."""

    path: str
    sha256: str
    model: Any
    tokenizer: Any
    bank: LoraBank
    batcher: Batcher


@dataclass(frozen=True)
class Route:
    """Where a request goes: a version, and the experiment and variant when an experiment assigned it."""

    version: ModelVersion
    user_id: str
    experiment: str | None = None
    variant: str | None = None


@dataclass
class Drawn:
    """Posts drawn through the copy filter: draws thrown away as copies, posts dropped, the author written as."""

    samples: list[Sample]
    filtered: int
    dropped: int
    author: str | None
    prompt_tokens: int = 0


@dataclass
class Served:
    generation_id: str
    version: ModelVersion
    experiment: str | None
    variant: str | None
    user_id: str
    author: str | None
    posts: list[Sample]
    filtered_copies: int
    dropped: int
    prompt_tokens: int = 0
    """The tokens each post's prompt is (the post separator and author token included)."""


@dataclass
class ServiceSettings:
    models: list[str] = field(default_factory=list)
    """What to load at start: names or name:version; empty = every registered name's champion (or latest)."""
    max_batch: int = 16
    max_wait_ms: float = 10.0
    queue_size: int = 64
    copy_filter: bool = True
    shared_base: bool = True
    """LoRA versions as adapters on one shared base (False: each its own merged model, as exported)."""
    max_adapters: int = 64
    """Adapters held in memory at most; the least recently used leaves first (it reloads from disk when asked for)."""


class Service:
    def __init__(self, engine: Engine, settings: ServiceSettings | None = None):
        self.engine, self.settings = engine, settings or ServiceSettings()
        self.batch_observers: list[Callable[[int, float, int], None]] = []
        """Called with (posts, seconds, tokens) after each batch or decoding step: an app's metrics add theirs."""
        self._pool: dict[str, LoadedModel] = {}
        self.failures: dict[str, str] = {}
        self._lock = threading.Lock()
        self._loading: dict[str, Future[LoadedModel]] = {}
        self._retiring: dict[str, LoadedModel] = {}
        """Loads under way: a request and the registry watcher wanting one version share one load."""
        self._decided_at: dict[str, float] = {}
        self._watching: threading.Event | None = None
        self._bases: dict[str, SharedBase] = {}
        self._base_lock = threading.Lock()
        self._used: dict[str, float] = {}

    # ------------------------------------------------------------ models

    def _wanted(self) -> list[str]:
        """Refs to load: the settings' (NAME:* is every version of NAME), else every name's champion."""
        from tweetforge.registry.versions import list_versions

        if not self.settings.models:
            return sorted({v.name for v in list_versions(self.engine)})
        wanted: list[str] = []
        for ref in self.settings.models:
            if ref.endswith(":*"):
                wanted += [v.ref for v in list_versions(self.engine, ref[:-2])] or [ref[:-2]]  # none: resolving names the error
            else:
                wanted.append(ref)
        return list(dict.fromkeys(wanted))

    def _load(self, version: ModelVersion) -> LoadedModel:
        from tweetforge.generation.generate import load_copy_index, load_model
        from tweetforge.registry.adapters import AdapterError
        from tweetforge.registry.versions import ensure_copy_index
        from tweetforge.serving.batching import Batcher
        from tweetforge.serving.continuous import ContinuousBatcher

        ensure_copy_index(self.engine, version)
        index = load_copy_index(str(version.path))
        adapter = version.params.get("adapter")
        if self.as_adapter(version):
            try:
                return self._load_adapter(version, adapter, index)
            except (AdapterError, ValueError):
                pass  # its base is gone or changed, or its layers are not Linear (GPT-2's Conv1D): the merged export serves it
        model, tokenizer, info = load_model(str(version.path))
        recurrent = getattr(model.config, "model_type", "") == "tweetforge-lstm"  # its state is not a key/value cache
        max_new_tokens = info.get("generation", {}).get("max_new_tokens", 96)
        batcher = (Batcher if recurrent else ContinuousBatcher)(model, tokenizer, max_new_tokens=max_new_tokens, max_batch=self.settings.max_batch,
                                                                max_wait_ms=self.settings.max_wait_ms, queue_size=self.settings.queue_size,
                                                                observe=self._observe_batch)
        return LoadedModel(version, model, tokenizer, info, index, batcher)

    def as_adapter(self, version: ModelVersion) -> bool:
        """Whether a version is served as an adapter on a shared base: a LoRA version whose adapter adds no
        tokens to the base's vocabulary (multi-author control tokens need their own embeddings)."""
        adapter = version.params.get("adapter")
        return bool(self.settings.shared_base and adapter and not adapter.get("control_tokens"))

    SHARED_MAX_NEW_TOKENS = 1024
    """A shared batcher's own limit; each adapter's view holds its rows to that version's limit."""

    def _shared_base(self, path: str, sha256: str) -> SharedBase:
        """The base at path (checked to hash to sha256), loaded once for every adapter on it."""
        from tweetforge.generation.generate import decode_layout
        from tweetforge.serving.continuous import ContinuousBatcher
        from tweetforge.serving.lora_bank import LoraBank
        from tweetforge.training.models.causal_lm import load_pretrained

        with self._base_lock:
            shared = self._bases.get(path)
            if shared is not None:
                return shared
            model, tokenizer = load_pretrained(Path(path), [], lora=None)
            model.eval()
            decode_layout(model)
            return_freed_memory()
            bank = LoraBank(model)
            batcher = ContinuousBatcher(model, tokenizer, max_new_tokens=self.SHARED_MAX_NEW_TOKENS, max_batch=self.settings.max_batch,
                                        max_wait_ms=self.settings.max_wait_ms, queue_size=self.settings.queue_size, observe=self._observe_batch,
                                        bank=bank)
            shared = self._bases[path] = SharedBase(path, sha256, model, tokenizer, bank, batcher)
            return shared

    def _load_adapter(self, version: ModelVersion, adapter: dict[str, Any], index: CopyIndex) -> LoadedModel:
        """An adapter version as a slot in its base's bank; past max_adapters the least recently used leaves."""
        import json

        from tweetforge.registry.adapters import check_base
        from tweetforge.serving.lora_bank import AdapterView

        loaded = self._bases.get(adapter["base_path"])
        check_base(version.path, adapter, loaded.sha256 if loaded else None)
        shared = self._shared_base(adapter["base_path"], adapter["base_sha256"])
        info = json.loads((version.path / "tweetforge.json").read_text())
        self._make_room_for_an_adapter()
        slot = shared.bank.add(version.path / adapter["dir"])
        return_freed_memory()  # a bank that grew has freed its smaller tensors
        view = AdapterView(shared.batcher, shared.bank, slot, info.get("generation", {}).get("max_new_tokens", 96))
        return LoadedModel(version, shared.model, shared.tokenizer, info, index, view, shared_base=shared.path)

    def _make_room_for_an_adapter(self) -> None:
        """Below max_adapters: the least recently used adapters leave the pool (requests already routed to
        one finish on it during the retirement grace; a later request loads it again from disk)."""
        with self._lock:
            adapters = sorted((ref for ref, m in self._pool.items() if m.shared_base), key=lambda ref: self._used.get(ref, 0.0))
            leaving = {ref: self._pool[ref] for ref in adapters[: max(0, len(adapters) - self.settings.max_adapters + 1)]}
            self._pool = {ref: m for ref, m in self._pool.items() if ref not in leaving}
        for ref, loaded in leaving.items():
            self._retire(ref, loaded)

    def _observe_batch(self, posts: int, seconds: float, tokens: int) -> None:
        for observe in self.batch_observers:
            observe(posts, seconds, tokens)

    def load(self) -> None:
        """Load every wanted model into a new pool and swap it in at once: requests already holding a model
        finish on it. A model that fails to load is reported by readiness; the others serve."""
        from tweetforge.registry.versions import resolve

        pool: dict[str, LoadedModel] = {}
        failures: dict[str, str] = {}
        for ref in self._wanted():
            try:
                version = resolve(self.engine, ref)
                if self.as_adapter(version) and sum(1 for m in pool.values() if m.shared_base) >= self.settings.max_adapters:
                    continue  # past the cap: loaded on its first request, in place of the least recently used
                pool[version.ref] = self._obtain(version)
            except Exception as exc:  # noqa: BLE001 - any failure to load is reported, not fatal
                failures[ref] = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        with self._lock:
            old, self._pool, self.failures = self._pool, pool, failures
        for ref, loaded in old.items():
            if ref not in pool:
                self._retire(ref, loaded)

    RETIRE_AFTER_S = 30.0
    """A model that left the pool keeps serving requests that were routed to it before the swap, this long."""

    def _retire(self, ref: str, loaded: LoadedModel) -> None:
        with self._lock:
            self._retiring[ref] = loaded

        def stop() -> None:
            with self._lock:
                if self._retiring.get(ref) is loaded:
                    del self._retiring[ref]
            if all(m is not loaded for m in self._pool.values()):
                loaded.batcher.stop()

        timer = threading.Timer(self.RETIRE_AFTER_S, stop)
        timer.daemon = True
        timer.start()

    def loaded(self) -> list[LoadedModel]:
        return list(self._pool.values())

    def _obtain(self, version: ModelVersion) -> LoadedModel:
        """The pooled model, or one load of it shared by everyone who asks meanwhile."""
        with self._lock:
            loaded = self._pool.get(version.ref)
            if loaded is not None:
                return loaded
            future = self._loading.get(version.ref)
            owner = future is None
            if owner:
                future = self._loading[version.ref] = Future()
        if owner:
            try:
                future.set_result(self._load(version))
            except Exception as exc:  # noqa: BLE001 - handed to every waiter
                future.set_exception(exc)
            finally:
                with self._lock:
                    self._loading.pop(version.ref, None)
        return future.result()

    def _model(self, version: ModelVersion) -> LoadedModel:
        self._used[version.ref] = time.monotonic()
        loaded = self._pool.get(version.ref) or self._retiring.get(version.ref)
        if loaded is not None:
            return loaded
        try:  # a version named explicitly, an experiment variant, a champion newer than the pool: loaded on first use
            loaded = self._obtain(version)
        except Exception as exc:  # noqa: BLE001
            raise ServiceError(503, "model_unavailable", f"{version.ref} cannot be loaded: {exc}") from None
        with self._lock:
            self._pool = {**self._pool, version.ref: loaded}
        return loaded

    def registry_state(self) -> tuple:
        """What the pool depends on: every alias and the newest version of each name."""
        from sqlalchemy import func, select

        from tweetforge.db.schema import model_aliases, model_versions

        with self.engine.connect() as conn:
            aliases = conn.execute(select(model_aliases.c.name, model_aliases.c.alias, model_aliases.c.version)
                                   .order_by(model_aliases.c.name, model_aliases.c.alias)).all()
            newest = conn.execute(select(model_versions.c.name, func.max(model_versions.c.version))
                                  .group_by(model_versions.c.name).order_by(model_versions.c.name)).all()
        return tuple(map(tuple, aliases)), tuple(map(tuple, newest))

    def watch_registry(self, every_s: float = 5.0) -> None:
        """Reload the pool whenever the registry changes (a new champion from `watch` or `promote`): the new
        model loads beside the old one, then the pool swaps; requests in flight finish on the old one."""
        if self._watching is not None:
            return
        stop = self._watching = threading.Event()
        state = self.registry_state()

        def run() -> None:
            nonlocal state
            while not stop.wait(every_s):
                try:
                    now = self.registry_state()
                    if now != state:
                        self.load()
                        state = now
                except Exception:  # noqa: BLE001, S112 - a store that is briefly unavailable: try again next time
                    continue

        threading.Thread(target=run, name="registry-watcher", daemon=True).start()

    def stop_watching(self) -> None:
        if self._watching is not None:
            self._watching.set()
            self._watching = None

    # ------------------------------------------------------------ routing

    def route(self, model: str, user_id: str | None) -> Route:
        """A running experiment's name assigns the user a variant (sticky), anything else is a registry
        reference. A request without a user id gets a new one."""
        from tweetforge.experiments.ab import ExperimentError, assign, get_experiment, new_user_id
        from tweetforge.registry.versions import RegistryError, resolve

        user_id = user_id or new_user_id()
        try:
            experiment = get_experiment(self.engine, model)
        except ExperimentError:
            experiment = None
        if experiment is not None and experiment.status == "running":
            variant = assign(experiment, user_id)
            return Route(resolve(self.engine, variant.model_ref), user_id, experiment.name, variant.name)
        try:
            return Route(resolve(self.engine, model), user_id)
        except RegistryError as exc:
            raise ServiceError(404, "unknown_model", str(exc)) from None

    # ------------------------------------------------------------ generation

    def _post_prefix(self, loaded: LoadedModel, author: str | None) -> tuple[list[int], str | None]:
        from tweetforge.generation.generate import GenerationError

        try:
            return post_prefix(loaded.tokenizer, loaded.info, author)
        except GenerationError as exc:
            raise ServiceError(422, "bad_author", str(exc)) from None

    def draw(self, loaded: LoadedModel, prompt: str, n: int, *, author: str | None, sampling: Sampling, seed: int | None,
             cancelled: threading.Event | None = None) -> Drawn:
        from tweetforge.generation.generate import GenerationError
        from tweetforge.serving.batching import ClientGone, Overloaded

        prefix, author = self._post_prefix(loaded, author)
        base_seed = seed if seed is not None else random.getrandbits(31)

        def draw(count: int, draw_seed: int) -> list[Sample]:
            return loaded.batcher.draw(Job(tuple(prefix), prompt, count), sampling, draw_seed if seed is not None else None, cancelled)

        try:
            samples, filtered, dropped = draw_without_copies(draw, n, base_seed, loaded.copy_index if self.settings.copy_filter else None)
        except Overloaded as exc:
            raise overloaded(loaded, exc) from None
        except GenerationError as exc:
            raise ServiceError(422, "bad_request", str(exc)) from None
        except ClientGone as exc:
            raise ServiceError(499, "client_closed_request", str(exc)) from None
        return Drawn(samples, filtered, dropped, author, len(encode_job(loaded.tokenizer, Job(tuple(prefix), prompt, 1))))

    def generate(self, model: str, prompt: str = "", n: int = 1, *, author: str | None = None, sampling: Sampling | None = None,
                 seed: int | None = None, user_id: str | None = None, cancelled: threading.Event | None = None) -> Served:
        """`cancelled`, set when the client goes away, withdraws the request from its model's queue."""
        route = self.route(model, user_id)
        sampling = sampling or Sampling()
        drawn = self.draw(self._model(route.version), prompt, n, author=author, sampling=sampling, seed=seed, cancelled=cancelled)
        return self._log(route, drawn, prompt=prompt, n=n, sampling=sampling, seed=seed)

    def _log(self, route: Route, drawn: Drawn, *, prompt: str, n: int, sampling: Sampling, seed: int | None,
             pair_id: str | None = None) -> Served:
        from tweetforge.experiments.ab import log_generation

        posts = [{"text": s.text, "ended": s.ended, "filtered_copies": s.filtered_copies, "generated": True} for s in drawn.samples]
        params = {"n": n, "author": drawn.author, "temperature": sampling.temperature, "top_p": sampling.top_p,
                  "max_chars": sampling.max_chars, "seed": seed}
        version = route.version
        generation_id = log_generation(self.engine, version.name, version.version, prompt=prompt, params=params, posts=posts,
                                       user_id=route.user_id, experiment=route.experiment, variant=route.variant, pair_id=pair_id)
        return Served(generation_id, version, route.experiment, route.variant, route.user_id, drawn.author, drawn.samples,
                      drawn.filtered, drawn.dropped, drawn.prompt_tokens)

    def stream(self, model: str, prompt: str = "", n: int = 1, *, author: str | None = None, sampling: Sampling | None = None,
               seed: int | None = None, user_id: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        """(event, data) pairs: `start`; per post `token` deltas as they are made, `discard` when the finished
        post copies a training post (it is re-drawn), `post` when it is kept; then `done` with the generation id.
        Each post is one request to the model's batcher with a streamer, so streamed posts share decoding
        steps with everything else being served; a seed makes them run alone, reproducibly. Closing the
        stream (the client went away) takes the post out of the batch."""
        from transformers import TextIteratorStreamer

        from tweetforge.generation.generate import MAX_REDRAWS, REDRAW_SEED_STEP, GenerationError
        from tweetforge.serving.batching import ClientGone, Overloaded

        route = self.route(model, user_id)
        version, experiment, variant, user_id = route.version, route.experiment, route.variant, route.user_id
        sampling = sampling or Sampling()
        loaded = self._model(version)
        prefix, author = self._post_prefix(loaded, author)
        yield "start", {"model": version.name, "version": version.version, "experiment": experiment, "variant": variant, "user_id": user_id}
        kept: list[Sample] = []
        filtered = dropped = 0
        gone = threading.Event()
        try:
            for i in range(n):
                for attempt in range(MAX_REDRAWS + 1):
                    streamer = TextIteratorStreamer(loaded.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=STREAM_TIMEOUT_S)
                    draw_seed = seed + i + attempt * REDRAW_SEED_STEP if seed is not None else None
                    try:
                        future = loaded.batcher.submit(Job(tuple(prefix), prompt, 1), sampling, draw_seed, gone, streamer)
                    except Overloaded as exc:
                        raise overloaded(loaded, exc) from None
                    if prompt:
                        yield "token", {"post": i, "text": prompt}
                    for delta in streamer:
                        if delta:
                            yield "token", {"post": i, "text": delta}
                    try:
                        sample = future.result()[0]
                    except (GenerationError, ClientGone) as exc:
                        raise ServiceError(422, "bad_request", str(exc)) from None
                    if self.settings.copy_filter and loaded.copy_index.copies(sample.text):
                        filtered += 1
                        yield "discard", {"post": i, "reason": "copies a training post; drawing again"}
                        continue
                    sample.filtered_copies = attempt
                    kept.append(sample)
                    yield "post", {"post": i, "text": sample.text, "ended": sample.ended, "filtered_copies": attempt, "generated": True}
                    break
                else:
                    dropped += 1
        finally:
            gone.set()  # a stream closed early leaves the batch; after the last post this changes nothing
        prompt_tokens = len(encode_job(loaded.tokenizer, Job(tuple(prefix), prompt, 1)))
        served = self._log(route, Drawn(kept, filtered, dropped, author, prompt_tokens), prompt=prompt, n=n, sampling=sampling, seed=seed)
        yield "done", {"generation_id": served.generation_id, "model": version.name, "version": version.version, "experiment": experiment,
                       "variant": variant, "user_id": user_id, "filtered_copies": filtered, "dropped": dropped, "prompt_tokens": prompt_tokens,
                       "posts": [{"text": s.text, "generated": True, "ended": s.ended, "filtered_copies": s.filtered_copies,
                                  "new_tokens": s.new_tokens} for s in kept]}

    def arena(self, experiment_name: str, prompt: str = "", *, author: str | None = None, sampling: Sampling | None = None,
              user_id: str | None = None) -> tuple[str, str, list[Served]]:
        """(pair id, user id, two generations from two variants in a random order) for a pairwise vote."""
        import uuid

        from tweetforge.experiments.ab import (
            ExperimentError,
            arena_pair,
            get_experiment,
            new_user_id,
        )
        from tweetforge.registry.versions import resolve

        user_id = user_id or new_user_id()
        try:
            experiment = get_experiment(self.engine, experiment_name)
        except ExperimentError as exc:
            raise ServiceError(404, "unknown_experiment", str(exc)) from None
        if experiment.status != "running":
            raise ServiceError(409, "experiment_not_running", f"experiment {experiment.name} is {experiment.status}")
        pair_id = str(uuid.uuid4())
        sampling = sampling or Sampling()
        shown = []
        for variant in arena_pair(experiment, user_id, pair_id):
            route = Route(resolve(self.engine, variant.model_ref), user_id, experiment.name, variant.name)
            drawn = self.draw(self._model(route.version), prompt, 1, author=author, sampling=sampling, seed=None)
            shown.append(self._log(route, drawn, prompt=prompt, n=1, sampling=sampling, seed=None, pair_id=pair_id))
        return pair_id, user_id, shown

    def feedback(self, generation_id: str, event: str, *, winner_id: str | None = None, user_id: str | None = None) -> int:
        """Returns the event's id once it is committed; then a running experiment's decision is applied."""
        from sqlalchemy import select

        from tweetforge.db.schema import generations
        from tweetforge.experiments.ab import (
            ExperimentError,
            apply_decision,
            experiment_status,
            record_feedback,
        )

        try:
            event_id = record_feedback(self.engine, generation_id, event, winner_id, user_id)
        except ExperimentError as exc:
            status = 404 if str(exc).startswith("no generation") else 422
            raise ServiceError(status, "bad_feedback", str(exc)) from None
        with self.engine.connect() as conn:
            experiment = conn.execute(select(generations.c.experiment).where(generations.c.id == generation_id)).scalar()
        now = time.monotonic()
        if experiment and now - self._decided_at.get(experiment, 0.0) >= DECISION_INTERVAL_S:
            self._decided_at[experiment] = now
            try:
                apply_decision(self.engine, experiment_status(self.engine, experiment))
            except ExperimentError:
                pass  # the event is stored; a decision can wait for the next one
        return event_id
