"""Batched generation against each sequence generated alone (to the character), and LaneKernel's lanes
against one lane (to the bit): the property that makes a batch's texts independent of the batch."""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import charstream
from charstream import batching
from charstream._kernel import LaneKernel

TEXT = "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer. " * 8


def _model(cell="rnn", layers=1, dtype="float64", H=16, seed=0):
    m = charstream.Model(sorted(set(TEXT)), hidden_size=H, seed=seed, cell=cell, layers=layers, dtype=dtype)
    list(charstream.Trainer(m).train([TEXT]))
    return m


def _alone(m, r):
    r = dict(r)
    return "".join(itertools.islice(m.generate(**r), r["length"]))


def _together(m, requests, **kw):
    texts = [""] * len(requests)
    for i, piece in m.generate_many(requests, **kw):
        texts[i] += piece
    return texts


REQUESTS = [
    dict(prompt="To be", random_seed=1, length=300),
    dict(prompt="", random_seed=2, length=1, temperature=0.5),
    dict(prompt="whether", random_seed=3, length=157, top_k=3),
    dict(prompt="the", length=90, sampler="greedy"),
    dict(prompt="nob", random_seed=4, length=120, top_p=0.8),                     # Python: the nucleus
    dict(prompt="in", random_seed=5, length=77, sampler=lambda p, rng: int(np.argmax(p * rng.random(len(p))))),
    dict(prompt="Tis", random_seed=6, length=0),
    dict(prompt="mind", random_seed=7, length=400, temperature=1.7, fresh_state=True),
    dict(prompt="To be", random_seed=1, length=300),                              # the first one again
]


@pytest.mark.parametrize("cell,layers,dtype", [("rnn", 1, "float64"), ("gru", 1, "float64"), ("lstm", 1, "float64"),
                                               ("lstm", 2, "float32"), ("rnn", 2, "float64"), ("gru", 1, "float32")])
def test_each_text_is_what_generate_gives_alone(cell, layers, dtype):
    m = _model(cell, layers, dtype)
    together = _together(m, REQUESTS)
    assert together == [_alone(m, r) for r in REQUESTS]
    assert together[0] == together[-1] and len(together[0]) == 300 and together[6] == ""
    assert len(set(together[:3])) == 3
    assert _together(m, REQUESTS[::-1], threads=2, first_block=1, max_block=64) == together[::-1]


@pytest.mark.parametrize("workers", [1, 2, 3, 5])
def test_rnn_turns_shared_over_worker_threads_give_each_text_alone(workers):
    m = _model()
    batch = batching.Batch(m, lanes=len(REQUESTS), first_block=4, max_block=64, workers=workers)
    assert len(batch.kernels) == workers and len({id(k) for k in batch.kernels}) == workers
    for i, r in enumerate(REQUESTS):
        batch.add(batching.prepare(m, batching.as_request(r), i, 4))
    batch.prime()
    texts = [""] * len(REQUESTS)
    for i, piece in batching._pieces(batch):
        texts[i] += piece
    assert texts == [_alone(m, r) for r in REQUESTS]


def test_pieces_arrive_in_order_with_growing_blocks():
    m = _model()
    got = list(m.generate_many([dict(random_seed=1, length=200), dict(random_seed=2, length=50)], first_block=8))
    assert [len(t) for i, t in got if i == 1] == [8, 16, 26]
    assert [len(t) for i, t in got if i == 0] == [8, 16, 26, 64, 86]    # rounds take the fewest either may


def test_requests_may_be_prompts_or_request_objects():
    m = _model()
    a = _together(m, ["To", batching.Request(prompt="be", random_seed=3, length=20)][1:])
    assert a == [_alone(m, dict(prompt="be", random_seed=3, length=20))]
    endless = m.generate_many(["To"])
    assert len("".join(t for _, t in itertools.islice(endless, 5))) > 100


def test_lanes_join_and_leave_between_rounds():
    m = _model("lstm", H=24)
    batch = batching.Batch(m, lanes=3, first_block=1, max_block=16)
    rs = [dict(prompt="To", random_seed=s, length=60 + 7 * s) for s in range(6)]
    texts, lanes = {}, {}
    for step in range(400):
        if step % 5 == 0 and step // 5 < len(rs):      # a new one every 5 rounds; at most 3 run at once
            i = step // 5
            lanes[i] = batch.add(batching.prepare(m, rs[i], i, 1))
            texts[i] = ""
        batch.prime(budget=1)                          # prompts read a character a round
        for lane, text in batch.round(limit=5):
            texts[lane.index] += text
        if step == 12:
            batch.remove(lanes[1])                     # a client gone: the others go on
    assert set(texts) == set(range(6))
    for i, r in enumerate(rs):
        if i == 1:
            assert _alone(m, r).startswith(texts[1]) and len(texts[1]) < r["length"]
        else:
            assert texts[i] == _alone(m, r), i


def test_bad_requests_fail_before_anything_is_drawn():
    m = _model()
    for bad, err in ((dict(temperature=0), ValueError), (dict(top_k=0), ValueError), (dict(length=-1), ValueError),
                     (dict(sampler="nope"), charstream.CharstreamError), (dict(colour=1), TypeError)):
        with pytest.raises(err):
            m.generate_many([dict(length=3), bad])
    with pytest.raises(TypeError, match="a request must be"):
        m.generate_many([3])
    assert list(m.generate_many([])) == []


def test_a_failing_sampler_raises_from_the_iterator():
    m = _model()
    it = m.generate_many([dict(length=50, random_seed=1), dict(length=50, sampler=lambda p, rng: 10**6)])
    with pytest.raises(charstream.CharstreamError, match="returned 1000000"):
        list(it)


CELLS = st.sampled_from([("rnn", 1), ("gru", 1), ("lstm", 1), ("gru", 2), ("lstm", 2), ("rnn", 3)])


@settings(max_examples=40, deadline=None)
@given(cell=CELLS, H=st.integers(1, 80), V=st.integers(1, 90), B=st.integers(1, 40),
       dtype=st.sampled_from([np.float64, np.float32]), threads=st.integers(1, 3), seed=st.integers(0, 2**31))
def test_a_lane_of_a_batch_is_one_lane_alone_to_the_bit(cell, H, V, B, dtype, threads, seed):
    """Row b of every product is summed in one order whatever B and b are (ext/lanes.h, docs/kernel.md)."""
    (cell, L), rng = cell, np.random.default_rng(seed)
    params = {p.name: (rng.standard_normal(p.shape) * 2).astype(dtype)
              for p in charstream.cells.params(cell, L, V, H)}
    S = charstream.cells.state_size(cell, L, H)
    n = 12
    hs = (rng.standard_normal((B, S)) * 0.7).astype(dtype)
    u = rng.random((B, n))
    inv, greedy, top_k = rng.uniform(0.3, 3, B), rng.random(B) < 0.2, rng.integers(0, V + 2, B)
    batch = LaneKernel(params, None, 1, cell=cell, layers=L, lanes=B + 3, threads=threads)
    out = np.empty((B, n), dtype=np.int32)
    h_b = hs.copy()
    batch.sample_lanes(h_b, u, out, inv, greedy, top_k)
    one = LaneKernel(params, None, 1, cell=cell, layers=L, lanes=1)
    for b in range(B):
        h1, o1 = hs[b].copy(), np.empty((1, n), dtype=np.int32)
        one.sample_lanes(h1[None, :], u[b:b + 1], o1, inv[b:b + 1], greedy[b:b + 1], top_k[b:b + 1])
        assert np.array_equal(o1[0], out[b]) and h1.tobytes() == h_b[b].tobytes(), b
    xs = rng.integers(0, V, (B, 5)).astype(np.int32)          # prompts: stepped together and alone
    h_b = hs.copy()
    batch.step(xs, h_b)
    for b in range(B):
        h1 = hs[b].copy()
        one.step(xs[b], h1)
        assert h1.tobytes() == h_b[b].tobytes(), b
    p1, pb = np.empty(V), np.empty(V)
    one.probs(h_b[B - 1].copy(), p1, 0.9)
    batch.probs(h_b[B - 1].copy(), pb, 0.9)
    assert p1.tobytes() == pb.tobytes()
