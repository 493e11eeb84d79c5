"""Generation and scoring start from the state training left; dynamic evaluation; exact lengths."""
import copy
import itertools
import json
import os
import pty
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import charstream
import oracle
from charstream.cli import main
from charstream.scoring import score, score_adaptive

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


@pytest.fixture(scope="module")
def trained(shakespeare):
    m = charstream.Model("", hidden_size=24, seed=3)
    list(charstream.Trainer(m).train([shakespeare[:12000]]))
    return m


@pytest.fixture
def saved(trained, tmp_path):
    path = tmp_path / "m.npz"
    trained.save(path)
    return path


def _take(it, n):
    return "".join(itertools.islice(it, n))


def test_generate_starts_from_the_trained_state_with_the_seed_on_top(trained):
    h = trained.state.hprev.copy()
    kernel = trained.kernel()
    kernel.step(trained.encode("To be"), h)
    u = np.random.default_rng(5).random(300)
    out = np.empty(300, dtype=np.int32)
    kernel.sample(h, u, out, 1.0)
    first = trained.generate("To be", random_seed=5)
    assert _take(first, 300)[:32] == trained.vocabulary.decode(out[:32])   # the first block: 32 draws
    before = trained.state.hprev.copy()
    _take(trained.generate(random_seed=1), 500)
    np.testing.assert_array_equal(trained.state.hprev, before)             # generation never moves it


def test_fresh_state_is_todays_zero_start(trained):
    ref = copy.deepcopy(trained)
    ref.state.hprev[:] = 0.0
    assert _take(trained.generate("To", random_seed=2, fresh_state=True), 400) == \
        _take(ref.generate("To", random_seed=2), 400)
    assert _take(trained.generate("To", random_seed=2), 400) != _take(ref.generate("To", random_seed=2), 400)
    assert trained.evaluate("To be or not to be", fresh_state=True) == ref.evaluate("To be or not to be")


def _numpy_sample(model, h, u):
    """The oracle: min-char-rnn's sampling in numpy from hidden state h, each character the first
    whose cumulative probability passes its uniform draw u[i]."""
    p = model.params
    out = []
    for ui in u:
        y = p["Why"] @ h + p["by"]
        pr = np.exp(y - y.max())
        ix = int(np.searchsorted(np.cumsum(pr / pr.sum()), ui, side="right"))
        out.append(model.vocab[ix])
        h = np.tanh(p["Wxh"][:, ix] + p["Whh"] @ h + p["bh"])
    return "".join(out)


def test_the_live_sample_reads_the_live_state(trained):
    """Trainer.sample against numpy from the state training left (and from zeros), with the draws
    of its random seed: the first 32 come in the first block."""
    trainer = charstream.Trainer(trained)
    u = np.random.default_rng(4).random(200)
    live = trainer.sample(200, random_seed=4)
    assert live == _numpy_sample(trained, trained.state.hprev.copy(), u)
    fresh = trainer.sample(200, random_seed=4, fresh_state=True)
    assert fresh == _numpy_sample(trained, np.zeros_like(trained.state.hprev), u)
    assert live != fresh


def test_evaluate_is_the_oracle_from_hprev(trained, shakespeare):
    text = shakespeare[15000:16000]
    idx = trained.encode(text)
    p = {k: v.copy() for k, v in trained.params.items()}
    h, nats = trained.state.hprev.copy(), 0.0
    for t in range(len(idx) - 1):
        loss, _, h = oracle.loss_fun(p, idx[t:t + 1], idx[t + 1:t + 2], h)
        nats += loss
    assert trained.evaluate(text) == pytest.approx(nats / (len(idx) - 1), rel=1e-9)


def test_adaptive_scoring_is_test_then_train_on_a_copy(trained, shakespeare):
    text = shakespeare[15000:15000 + 25 * 12 + 7]            # 12 whole chunks and a rest of 7
    before = copy.deepcopy(trained)
    got = score_adaptive(trained, [text[:100], text[100:]])
    # the gist's own loop from the trained state, each chunk's loss taken before its update
    p = {k: v.copy() for k, v in trained.params.items()}
    mem = {k: v.copy() for k, v in trained.state.mem.items()}
    idx = trained.encode(text)
    losses, h = oracle.train(p, mem, idx, T=25, lr=trained.state.learning_rate, hprev=trained.state.hprev.copy())
    rest = 0.0
    for t in range(25 * 12, len(idx) - 1):                  # the last 7 characters: scored, not trained
        loss, _, h = oracle.loss_fun(p, idx[t:t + 1], idx[t + 1:t + 2], h)
        rest += loss
    assert len(losses) == 12 and got.predicted == len(idx) - 1 == score(trained, [text]).predicted
    assert got.nats == pytest.approx(sum(losses) + rest, rel=1e-9)
    assert got.mode == "adapt"
    for k, v in before.params.items():                       # the model itself did not learn
        np.testing.assert_array_equal(trained.params[k], v)
        np.testing.assert_array_equal(trained.state.mem[k], before.state.mem[k])
    np.testing.assert_array_equal(trained.state.hprev, before.state.hprev)
    assert trained.state.chunks == before.state.chunks and trained.vocab == before.vocab


def test_eval_adapt_beats_static_on_text_unlike_the_training_and_never_writes(saved):
    held_out = "the quick brown fox jumps over the lazy dog. " * 60    # another source, very repetitive
    before = saved.read_bytes()
    figures = {}
    for mode in ([], ["--adapt"]):
        r = CliRunner().invoke(main, ["eval", "-", "--model", str(saved), "--json", *mode], input=held_out)
        assert r.exit_code == 0, r.output
        d = json.loads(r.stdout)
        figures[d["mode"]] = d
    assert set(figures) == {"static", "adapt"}
    assert figures["adapt"]["chars_scored"] == figures["static"]["chars_scored"] == len(held_out) - 1
    assert figures["adapt"]["nats_per_char"] < figures["static"]["nats_per_char"] - 0.5
    assert saved.read_bytes() == before
    human = CliRunner().invoke(main, ["eval", "-", "--model", str(saved), "--adapt"], input=held_out)
    assert human.exit_code == 0 and "adapting:" in human.stdout
    assert saved.read_bytes() == before


def test_eval_adapt_with_windows_is_one_clear_error(saved):
    r = CliRunner().invoke(main, ["eval", "-", "--model", str(saved), "--adapt", "--window", "10"], input="abc")
    assert r.exit_code == 2 and r.stderr.splitlines()[-1] == \
        "Error: Invalid value for --window: windows are scored without adapting: drop --window or --adapt"


def _cli(*args):
    return [sys.executable, "-m", "charstream", *map(str, args)]


@pytest.mark.parametrize("sampler", [[], ["--sampler", "greedy"], ["--top-k", "5"], ["--top-p", "0.8"],
                                     ["--sampler", "top-k"], ["--temperature", "0.5"]])
def test_a_pipe_gets_exactly_the_seed_and_length_characters(saved, sampler):
    for n in (0, 1, 500, 4200):
        r = subprocess.run(_cli("generate", "--model", saved, "--seed", "To be", "--length", n, *sampler),
                           cwd=DATA, capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert len(r.stdout.decode("utf-8")) == 5 + n


def test_a_terminal_gets_a_final_newline(saved):
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(_cli("generate", "--model", saved, "--seed", "To be", "--length", 50),
                                cwd=DATA, stdout=follower, stderr=subprocess.PIPE)
        os.close(follower)
        out = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:              # EIO: the terminal's other side closed
                break
            if not chunk:
                break
            out += chunk
        assert proc.wait(timeout=60) == 0
    finally:
        os.close(leader)
    text = out.decode("utf-8").replace("\r\n", "\n")
    assert text.startswith("To be") and text.endswith("\n") and len(text) == 5 + 50 + 1


def test_reset_every_zeroes_the_state_after_each_multiple_as_the_oracle_does(shakespeare):
    text = shakespeare[:3000]
    vocab = sorted(set(text))
    m = charstream.Model(vocab, hidden_size=12, seed=1)
    p = {k: v.copy() for k, v in m.params.items()}
    mem = {k: np.zeros_like(v) for k, v in p.items()}
    losses = [r.loss for r in charstream.Trainer(m, reset_every=110).train([text[:1234], text[1234:]])]
    idx, h, want, s = m.encode(text), np.zeros(12), [], 0
    while s + 26 <= len(idx):
        loss, grads, h = oracle.loss_fun(p, idx[s:s + 25], idx[s + 1:s + 26], h)
        oracle.adagrad(p, grads, mem)
        want.append(loss)
        s += 25
        if s // 110 != (s - 25) // 110:
            h = np.zeros(12)
    assert losses == pytest.approx(want, rel=1e-9)
    assert m.state.reset_every == 110 and charstream.Trainer(m).model.state.reset_every == 110   # saved


def test_reset_every_survives_a_save_and_refuses_bad_values(tmp_path):
    m = charstream.Model("ab", hidden_size=4, seed=0)
    charstream.Trainer(m, reset_every=50)
    m.save(tmp_path / "r.npz")
    assert charstream.load(tmp_path / "r.npz").state.reset_every == 50
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="reset_every must be a whole number"):
            charstream.Trainer(m, reset_every=bad)
    r = CliRunner().invoke(main, ["train", "-", "--model", str(tmp_path / "r.npz"), "--reset-every", "-3"], input="ab")
    assert r.exit_code == 2 and "Invalid value for '--reset-every'" in r.stderr
