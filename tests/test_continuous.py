"""Continuous batching: posts written in a batch that changes at every step are the posts each prompt
gets alone; a client that goes away leaves mid-post; each row's nucleus is the one transformers keeps."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from tweetforge.generation.generate import Job, Sampling, decode_layout, sample_jobs
from tweetforge.serving.batching import ClientGone
from tweetforge.serving.continuous import ContinuousBatcher, nucleus


@pytest.fixture(scope="module")
def tiny(tiny_gpt2):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2).eval()
    decode_layout(model)
    return model, AutoTokenizer.from_pretrained(tiny_gpt2)


PROMPTS = ["", "The", "Crooked Hillary is", "Make America Great Again! We will win big in", "Fake", "I will be on @foxandfriends"]


def test_a_changing_batch_writes_what_each_prompt_writes_alone(tiny):
    """Greedy decoding (top-k 1) makes a post a function of its prompt: prompts of different lengths
    joining a batch that is already writing must get, token for token, what generate() gives each alone."""
    model, tokenizer = tiny
    greedy = Sampling(top_k=1)
    prefix = (tokenizer.eos_token_id,)
    alone = [sample_jobs(model, tokenizer, [Job(prefix, p, 1)], greedy, 0, 40)[0][0].text for p in PROMPTS]
    batcher = ContinuousBatcher(model, tokenizer, max_new_tokens=40, max_batch=4)
    try:
        first = [batcher.submit(Job(prefix, p, 1), greedy) for p in PROMPTS[:3]]
        time.sleep(0.05)  # the first ones are mid-post when the others join; a batch of 4 makes some wait for a free row
        later = [batcher.submit(Job(prefix, p, 1), greedy) for p in PROMPTS[3:]]
        together = [f.result(timeout=60)[0].text for f in first + later]
    finally:
        batcher.stop()
    assert together == alone
    assert len(set(alone)) > 3  # the prompts lead somewhere different: the comparison means something
    assert batcher.stats.posts / batcher.stats.batches > 1.5  # rows shared decoding steps


def test_a_client_that_goes_away_leaves_the_batch_mid_post(tiny):
    model, tokenizer = tiny
    long_posts = Sampling(temperature=5.0, top_p=1.0)  # near-uniform: the end-of-post token is rarely drawn
    prefix = (tokenizer.eos_token_id,)
    batcher = ContinuousBatcher(model, tokenizer, max_new_tokens=200, max_batch=8)
    try:
        gone = threading.Event()
        leaving = batcher.submit(Job(prefix, "", 2), long_posts, cancelled=gone)
        staying = batcher.submit(Job(prefix, "", 1), Sampling())
        while batcher.stats.batches < 3:
            time.sleep(0.005)
        gone.set()
        with pytest.raises(ClientGone):
            leaving.result(timeout=60)
        steps_when_gone = batcher.stats.batches
        assert len(staying.result(timeout=60)) == 1
    finally:
        batcher.stop()
    assert steps_when_gone < 150  # it left after a few of its 200 steps, not at the end
    assert not batcher.rows and batcher.cache is None


def test_seeded_requests_run_alone_and_repeat(tiny):
    model, tokenizer = tiny
    prefix = (tokenizer.eos_token_id,)
    batcher = ContinuousBatcher(model, tokenizer, max_new_tokens=30, max_batch=8)
    try:
        noise = [batcher.submit(Job(prefix, "", 2), Sampling()) for _ in range(3)]
        a = batcher.submit(Job(prefix, "The", 2), Sampling(), seed=7)
        b = batcher.submit(Job(prefix, "The", 2), Sampling(), seed=7)
        assert [s.text for s in a.result(timeout=60)] == [s.text for s in b.result(timeout=60)]
        assert all(len(f.result(timeout=60)) == 2 for f in noise)
    finally:
        batcher.stop()
    expected = sample_jobs(model, tokenizer, [Job(prefix, "The", 2)], Sampling(), 7, 30)[0]
    assert [s.text for s in a.result()] == [s.text for s in expected]  # what `tweetforge generate --seed 7` writes


@pytest.mark.parametrize("top_k, top_p", [(0, 0.9), (0, 0.3), (50, 0.95), (5, 1.0), (0, 1.0), (700, 0.99)])
def test_each_rows_nucleus_is_the_one_transformers_keeps(top_k, top_p):
    """Against transformers' own TopK and TopP warpers, through the candidates (top 512 of 2,000) and
    through the full sort a row falls back to when its nucleus does not close within them."""
    from transformers.generation.logits_process import (
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 2000, generator=generator) * torch.tensor([[0.5], [1], [2], [4], [8], [0.1]])
    warped = logits.clone()
    if top_k:
        warped = TopKLogitsWarper(top_k)(None, warped)
    if top_p < 1:
        warped = TopPLogitsWarper(top_p)(None, warped)
    expected = warped.softmax(-1)
    settings = [Sampling(top_k=top_k, top_p=top_p)] * 6
    probs = logits.softmax(-1)
    full, order = probs.sort(dim=-1, descending=True)
    weights, closed = nucleus(full, settings, 2000)
    assert closed.all()
    got = torch.zeros_like(probs).scatter(1, order, weights / weights.sum(-1, keepdim=True))
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-4)
    top, index = probs.topk(512, dim=-1)
    weights, closed = nucleus(top, settings, 2000)
    for row in closed.nonzero().flatten().tolist():
        got = torch.zeros(2000).scatter(0, index[row], weights[row] / weights[row].sum())
        torch.testing.assert_close(got, expected[row], atol=1e-6, rtol=1e-4)
    needs_more = (expected > 0).sum(-1) > 512
    assert not (closed & needs_more).any()
    if top_k <= 512:  # a top-k beyond the candidates always takes the full sort: its mass is not known
        assert (closed == ~needs_more).all()  # closed exactly when the nucleus fits in the candidates


def test_a_failing_step_fails_its_requests_and_the_batcher_goes_on(tiny):
    model, tokenizer = tiny

    class FailsOnce:
        """The model, except that its second forward pass raises (as running out of memory would)."""

        def __init__(self) -> None:
            self.config, self.calls = model.config, 0

        def __call__(self, **inputs):  # type: ignore[no-untyped-def]
            self.calls += 1
            if self.calls == 2:
                raise RuntimeError("simulated failure in a decoding step")
            return model(**inputs)

    prefix = (tokenizer.eos_token_id,)
    batcher = ContinuousBatcher(FailsOnce(), tokenizer, max_new_tokens=30, max_batch=8)
    try:
        failed = batcher.submit(Job(prefix, "", 2), Sampling(temperature=5.0, top_p=1.0))
        with pytest.raises(RuntimeError, match="simulated failure"):
            failed.result(timeout=60)
        assert len(batcher.submit(Job(prefix, "The", 2), Sampling()).result(timeout=60)) == 2
    finally:
        batcher.stop()


def test_a_streamed_post_arrives_token_by_token_while_sharing_the_batch(tiny):
    from transformers import TextIteratorStreamer

    model, tokenizer = tiny
    prefix = (tokenizer.eos_token_id,)
    batcher = ContinuousBatcher(model, tokenizer, max_new_tokens=40, max_batch=8)
    try:
        others = [batcher.submit(Job(prefix, "", 2), Sampling()) for _ in range(3)]
        class CountingStreamer(TextIteratorStreamer):
            puts = 0

            def put(self, value):  # type: ignore[no-untyped-def]
                self.puts += 1
                super().put(value)

        streamer = CountingStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=60)
        streamed = batcher.submit(Job(prefix, "The", 1), Sampling(top_k=1), streamer=streamer)
        deltas = [delta for delta in streamer if delta]
        post = streamed.result(timeout=60)[0]
        assert all(len(f.result(timeout=60)) == 2 for f in others)
    finally:
        batcher.stop()
    assert streamer.puts > 20  # the prompt, then each token as it was made (this greedy post runs to the 40-token limit)
    assert ("The" + "".join(deltas)).strip() == post.text
    assert post.text == sample_jobs(model, tokenizer, [Job(prefix, "The", 1)], Sampling(top_k=1), 0, 40)[0][0].text
    assert batcher.stats.posts / batcher.stats.batches > 1.5  # it shared decoding steps with the other requests
