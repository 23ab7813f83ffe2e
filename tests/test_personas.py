"""Many personas on one base: LoRA versions served as adapters in one bank beside one base model, rows of
different personas in one decoding step, outputs equal to each version's merged export, adapters loaded
and evicted while serving."""

from __future__ import annotations

import json
import threading
import time

import pytest
import torch

from conftest import quick, run_cli
from tweetforge.generation.generate import Sampling, load_model
from tweetforge.registry.versions import register
from tweetforge.serving.service import Service, ServiceSettings
from tweetforge.training.train import train

GREEDY = Sampling(temperature=1.0, top_p=1e-6, max_chars=280)
"""top-p this small keeps only the likeliest token: greedy decoding through the sampling path."""


@pytest.fixture(scope="module")
def personas(tiny_llama, store):
    home, engine, trump, both = store
    made = {}
    for name, seed, layers in (("alice", 1, 2), ("bob", 2, 4), ("carol", 3, 3)):
        made[name] = register(engine, home / "models", train(quick(tiny_llama, seed=seed, train_layers=layers, learning_rate=2e-2, max_steps=20,
                                                                   name=name), trump, home), trump)
    made["alice2"] = register(engine, home / "models", train(quick(tiny_llama, seed=4, train_layers=2, learning_rate=2e-2, max_steps=5,
                                                                name="alice"), trump, home), trump)
    made["duo"] = register(engine, home / "models", train(quick(tiny_llama, dataset="both-v1", max_steps=5, name="duo"), both, home), both)
    return engine, made


def service_for(engine, models: list[str], **settings) -> Service:  # type: ignore[no-untyped-def]
    service = Service(engine, ServiceSettings(models=models, max_wait_ms=20, copy_filter=False, **settings))
    service.load()
    return service


def test_personas_share_one_base_and_a_batch_mixes_them_exactly(personas):
    engine, made = personas
    service = service_for(engine, ["alice:1", "bob", "carol", "duo"])
    loaded = {m.version.name: m for m in service.loaded()}
    assert loaded["alice"].model is loaded["bob"].model is loaded["carol"].model and loaded["alice"].shared_base
    assert loaded["duo"].shared_base is None  # control tokens need embeddings of their own: its merged export
    bank = service._bases[loaded["alice"].shared_base].bank
    slots = [loaded[name].batcher.slot for name in ("alice", "bob", "carol")]
    tokenizer = loaded["alice"].tokenizer
    ids = tokenizer(["Make America great", "The fake news", "Thank you Ohio"], return_tensors="pt", padding=True)["input_ids"]
    with torch.no_grad(), bank.lock:
        bank.use([slots[0], slots[1], slots[2]])
        mixed = loaded["alice"].model(input_ids=ids).logits
        bank.use([0, 0, 0])
        base = loaded["alice"].model(input_ids=ids).logits
    for row, name in enumerate(("alice", "bob", "carol")):
        merged = load_model(str(made[name].path))[0]
        with torch.no_grad():
            expected = merged(input_ids=ids[row : row + 1]).logits[0]
        assert (mixed[row] - expected).abs().max() < 1e-4, name
        assert (base[row] - expected).abs().max() > 1e-2, name  # the adapter is what makes the difference
    for m in service.loaded():
        m.batcher.stop()


def test_concurrent_personas_decode_together_as_their_merged_models_would(personas):
    engine, made = personas
    shared, alone = service_for(engine, ["alice:1", "bob", "carol"]), service_for(engine, ["alice:1", "bob", "carol"], shared_base=False)
    assert all(m.shared_base for m in shared.loaded()) and not any(m.shared_base for m in alone.loaded())
    names = ["alice:1", "bob", "carol"] * 4
    results: dict[int, str] = {}
    tokens: list[int] = []
    errors: list[Exception] = []

    def ask(i: int) -> None:
        try:
            post = shared.generate(names[i], "We", 1, sampling=GREEDY).posts[0]
            results[i] = post.text
            tokens.append(post.new_tokens)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    steps_before = next(iter(shared._bases.values())).batcher.stats.batches
    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(names))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    expected = {name: alone.generate(name, "We", 1, sampling=GREEDY).posts[0].text for name in ("alice:1", "bob", "carol")}
    assert [results[i] for i in range(len(names))] == [expected[n] for n in names]
    assert len(set(expected.values())) > 1  # the personas write differently
    steps = next(iter(shared._bases.values())).batcher.stats.batches - steps_before
    assert steps < 0.75 * sum(tokens)  # one at a time would take a step per token: rows of several personas shared steps
    for service in (shared, alone):
        for m in service.loaded():
            m.batcher.stop()


def test_adapters_load_and_leave_while_serving(personas):
    engine, made = personas
    service = service_for(engine, ["alice:*", "bob"], max_adapters=2)
    service.RETIRE_AFTER_S = 0.3  # the grace for requests already routed to an adapter that leaves
    assert sorted(m.version.ref for m in service.loaded()) == ["alice:1", "alice:2"]  # bob, past the cap, waits on disk
    stop, failures, served = threading.Event(), [], []

    def keep_asking() -> None:
        while not stop.is_set():
            try:
                served.append(service.generate("alice", "We", 1, sampling=GREEDY).posts[0].text)
            except Exception as exc:  # noqa: BLE001
                failures.append(exc)

    worker = threading.Thread(target=keep_asking)
    worker.start()
    try:
        carol = service.generate("carol", "We", 1, sampling=GREEDY).posts[0].text  # alice:1, least recently used, leaves
        assert sorted(m.version.ref for m in service.loaded()) == ["alice:2", "carol:1"]
        bob = service.generate("bob", "We", 1, sampling=GREEDY).posts[0].text  # carol leaves; alice:2 is in use
        assert sorted(m.version.ref for m in service.loaded()) == ["alice:2", "bob:1"]
        time.sleep(1.0)  # carol's grace is over: its slot is free
        carol_again = service.generate("carol", "We", 1, sampling=GREEDY).posts[0].text  # back from disk, perhaps in a reused slot
    finally:
        stop.set()
        worker.join()
    assert not failures and len(set(served)) == 1 and len(served) >= 2
    alone = service_for(engine, ["bob", "carol"], shared_base=False)
    assert carol == carol_again == alone.generate("carol", "We", 1, sampling=GREEDY).posts[0].text
    assert bob == alone.generate("bob", "We", 1, sampling=GREEDY).posts[0].text
    for s in (service, alone):
        for m in s.loaded():
            m.batcher.stop()


def test_export_for_vllm_hands_over_the_adapters_it_can(personas, store, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    engine, made = personas
    home = store[0]
    out = tmp_path / "vllm"
    done = run_cli(home, "export", "alice:*", "bob", "duo", "--for", "vllm", str(out))
    assert "vllm serve" in done.stdout and "--enable-lora" in done.stdout and f"bob={out / 'adapters' / 'bob'}" in done.stdout
    assert f"alice:2={out / 'adapters' / 'alice-2'}" in " ".join(done.stdout.split())
    assert "not exported duo: duo:1 trains author control-token embeddings" in " ".join(done.stderr.split())
    tokenizer = AutoTokenizer.from_pretrained(out / "base")
    ids = tokenizer(["Make America great again"], return_tensors="pt")["input_ids"]
    for name, folder in (("alice", "alice-1"), ("alice2", "alice-2"), ("bob", "bob")):
        config = json.loads((out / "adapters" / folder / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == str(out / "base") and not config.get("modules_to_save")
        adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(out / "base"), out / "adapters" / folder).eval()
        merged = load_model(str(made[name].path))[0]
        with torch.no_grad():
            assert (adapted(input_ids=ids).logits - merged(input_ids=ids).logits).abs().max() < 1e-4, name
    again = run_cli(home, "export", "bob", "--for", "vllm", str(out), check=False)
    assert again.returncode == 1 and f"{out} is not empty" in again.stderr
    only_duo = run_cli(home, "export", "duo", "--for", "vllm", str(tmp_path / "none"), check=False)
    assert only_duo.returncode == 1 and "nothing to export" in only_duo.stderr
