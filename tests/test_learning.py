"""Seeing learning: eval, info, budgets, the loss log and live samples."""
import csv
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import charstream
import oracle
from charstream.errors import CharstreamWarning
from charstream.scoring import score
from helpers import assert_same_model, cli, invoke, popen, run, saved_state, stop, wait_until


def _oracle_nats(model, text, h=None):
    """The oracle's summed cross-entropy of `text` (every character known), from hidden state `h`
    (default: zeros)."""
    idx = list(model.encode(text))
    h = np.zeros(model.hidden_size) if h is None else h.copy()
    loss, _, _ = oracle.loss_fun(model.params, idx[:-1], idx[1:], h)
    return loss


@pytest.fixture
def model_path(tmp_path, shakespeare):
    path = tmp_path / "m.npz"
    r = invoke("train", "-", "--model", path, "--hidden-size", 16, "--random-seed", 0, input=shakespeare[:6000])
    assert r.exit_code == 0, r.output
    return path


def test_score_streams_like_one_text(shakespeare):
    m = charstream.Model("", hidden_size=16, seed=0)
    list(charstream.Trainer(m).train([shakespeare[:9000]]))
    text = shakespeare[3000:9000]
    whole = score(m, [text], window=500)
    pieces = score(m, [text[i:i + 77] for i in range(0, len(text), 77)], window=500)
    assert whole.predicted == pieces.predicted == len(text) - 1
    assert whole.nats == pytest.approx(pieces.nats, rel=1e-12)
    assert whole.windows == pytest.approx(pieces.windows, rel=1e-12)
    assert len(whole.windows) == len(text) // 500
    # the same as the numpy oracle over the whole text at once, from the state training left
    assert whole.nats == pytest.approx(_oracle_nats(m, text, m.state.hprev), rel=1e-10)
    assert whole.windows[0] == pytest.approx(_oracle_nats(m, text[:500], m.state.hprev) / 499, rel=1e-10)
    fresh = score(m, [text], fresh_state=True)
    assert fresh.nats == pytest.approx(_oracle_nats(m, text), rel=1e-10)


def test_fresh_model_scores_about_log_v(tmp_path, shakespeare):
    vocab = sorted(set(shakespeare))
    charstream.Model(vocab, hidden_size=8, seed=0).save(tmp_path / "fresh.npz")
    (tmp_path / "t.txt").write_text(shakespeare[:5000])
    r = invoke("eval", tmp_path / "t.txt", "--model", tmp_path / "fresh.npz", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["nats_per_char"] == pytest.approx(math.log(len(vocab)), rel=0.01)
    nats = _oracle_nats(charstream.Model(vocab, hidden_size=8, seed=0), shakespeare[:5000]) / 4999
    assert d["chars_scored"] == 4999
    assert d["nats_per_char"] == pytest.approx(nats, rel=1e-10)
    assert d["bits_per_char"] == pytest.approx(nats / math.log(2), rel=1e-10)
    assert d["perplexity"] == pytest.approx(math.exp(nats), rel=1e-10)
    assert d["unknown_chars"] == 0 and d["mode"] == "static" and "windows" not in d


def test_training_lowers_the_score_and_unknown_chars_are_counted(model_path, shakespeare):
    text = shakespeare[6000:9000] + "жжж"
    r = invoke("eval", "-", "--model", model_path, "--json", input=text)
    d = json.loads(r.stdout)
    vocab = set(charstream.load(model_path).vocab)
    assert d["unknown_chars"] == sum(c not in vocab for c in text) >= 3
    assert d["chars_scored"] == len(text) - d["unknown_chars"] - 1
    assert d["nats_per_char"] < math.log(charstream.load(model_path).vocab_size) - 0.3
    human = invoke("eval", "-", "--model", model_path, input=shakespeare[6000:9000])
    assert "bits/char" in human.stdout and "perplexity" in human.stdout and "median" not in human.stdout
    windows = invoke("eval", "-", "--model", model_path, "--window", "1000", input=shakespeare[6000:9000])
    assert "median of 2 windows of 1,000" in windows.stdout   # 2,998 known characters


def test_eval_refuses_text_it_cannot_score(model_path):
    r = invoke("eval", "-", "--model", model_path, input="жжжжж")
    assert r.exit_code == 1 and "outside the model's vocabulary" in r.stderr
    r = invoke("eval", "-", "--model", model_path, input="")
    assert r.exit_code == 1 and "input was empty" in r.stderr


def test_evaluate_in_the_api(shakespeare):
    m = charstream.Model(sorted(set(shakespeare)), hidden_size=8, seed=0)
    assert m.evaluate(shakespeare[:3000]) == pytest.approx(math.log(m.vocab_size), rel=0.01)


def test_score_without_windows_is_the_same_whole_text_score(shakespeare):
    m = charstream.Model("", hidden_size=16, seed=0)
    list(charstream.Trainer(m).train([shakespeare[:5000]]))
    text = shakespeare[5000:9000]
    full, alone = score(m, [text], window=500), score(m, [text], window=None)
    assert alone.windows == [] and len(full.windows) == full.known // 500 >= 7
    assert alone.nats == full.nats and alone.predicted == full.predicted == full.known - 1
    assert m.evaluate(text) == full.nats_per_char


@pytest.mark.parametrize("window", [1, 0, -5, 2.5, True, "500"])
def test_score_refuses_a_bad_window(shakespeare, window):
    m = charstream.Model("ab", hidden_size=4, seed=0)
    with pytest.raises(ValueError, match="window must be at least 2"):
        score(m, ["abab"], window=window)


def test_info(model_path):
    r = invoke("info", "--model", model_path, "--json")
    d = json.loads(r.stdout)
    m = charstream.load(model_path)
    assert d["hidden_size"] == 16 and d["vocab_size"] == m.vocab_size
    assert d["parameters"] == sum(v.size for v in m.params.values())
    assert d["chunks_trained"] == m.state.chunks == (6000 - 1) // 25
    assert d["chars_seen"] == 6000 and d["file_bytes"] == os.path.getsize(model_path)
    assert d["recent_bits_per_char"] == pytest.approx(m.state.smooth_loss / 25 / math.log(2))
    assert d["format_version"] == 2   # the file's version (what a new save writes)
    text = invoke("info", "--model", model_path).stdout
    assert "hidden size    16" in text and "\\n" in text


def test_passes_equal_reading_the_file_again(tmp_path, shakespeare):
    (tmp_path / "a.txt").write_text(shakespeare[:2000])
    r = invoke("train", tmp_path / "a.txt", "--passes", 3, "--model", tmp_path / "p.npz", "--hidden-size", 8,
               "--random-seed", 1, "--no-validation", "--dropout", 0)
    assert r.exit_code == 0, r.output
    ref = charstream.Model("", hidden_size=8, seed=1)
    list(charstream.Trainer(ref).train([shakespeare[:2000]] * 3))
    assert_same_model(charstream.load(tmp_path / "p.npz"), ref)


def test_passes_refuse_streams(tmp_path):
    r = invoke("train", "-", "--passes", 2, "--model", tmp_path / "s.npz", input="abc" * 50)
    assert r.exit_code == 2 and "cannot be read twice" in r.stderr
    assert not (tmp_path / "s.npz").exists()


def test_max_chars_stops_exactly(tmp_path, shakespeare):
    r = invoke("train", "-", "--max-chars", 1001, "--model", tmp_path / "c.npz", "--hidden-size", 8,
               input=shakespeare[:5000])
    assert r.exit_code == 0
    m = charstream.load(tmp_path / "c.npz")
    assert m.state.chars_seen == 1001 and m.state.chunks == 40


def test_max_seconds_stops_a_quiet_pipe_and_saves(tmp_path, shakespeare):
    """All the text trains and is checkpointed while the pipe stays open; the budget then runs out
    while the pipe is quiet (not between chunks), and the model is saved."""
    path = tmp_path / "t.npz"
    proc = popen(cli("train", "-", "--model", path, "--max-seconds", "2", "--hidden-size", "8",
                     "--checkpoint-every", "0.05"), stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        proc.stdin.write(shakespeare[:2000].encode())
        proc.stdin.flush()
        wait_until(lambda: getattr(saved_state(path), "chunks", 0) == 79, what="a checkpoint of all 79 chunks")
        assert proc.poll() is None, "the budget ran out before the text had trained"
        assert proc.wait(timeout=30) == 0
        assert proc.stderr.read().decode().splitlines()[-2] == "stopped after --max-seconds 2"
    finally:
        stop(proc)
    assert charstream.load(path).state.chars_seen == 2000


@pytest.mark.parametrize("name", ["loss.csv", "loss.jsonl"])
def test_loss_log(tmp_path, shakespeare, name):
    log = tmp_path / name
    for _ in range(2):   # appends
        r = invoke("train", "-", "--model", tmp_path / "l.npz", "--hidden-size", 8, "--report-every", 0,
                   "--log", log, input=shakespeare[:1000])
        assert r.exit_code == 0
    if name.endswith(".csv"):
        rows = list(csv.DictReader(log.open()))
    else:
        rows = [json.loads(line) for line in log.open()]
    assert len(rows) >= 2 * 39
    assert int(rows[-1]["chunks"]) == 79 and int(rows[-1]["chars_seen"]) == 2000
    assert int(rows[-1]["chars_trained"]) == 79 * 25
    for key in ("time", "elapsed_s", "smooth_nats_per_char", "window_bits_per_char", "chars_per_s"):
        assert math.isfinite(float(rows[-1][key]))


def test_live_samples_do_not_disturb_training(shakespeare):
    ref = charstream.Model("", hidden_size=16, seed=3)
    list(charstream.Trainer(ref).train([shakespeare[:3000]]))
    m = charstream.Model("", hidden_size=16, seed=3)
    tr = charstream.Trainer(m)
    samples = []
    for r in tr.train([shakespeare[:3000]]):
        if r.chunk % 20 == 0:
            samples.append(tr.sample(50, random_seed=r.chunk))
    assert len(samples) == 5 and all(len(s) == 50 for s in samples)
    assert_same_model(m, ref)


def test_chars_trained_counts_each_chunk_at_its_own_seq_length(tmp_path, shakespeare):
    path = tmp_path / "t.npz"
    assert invoke("train", "-", "--model", path, "--hidden-size", 8, input=shakespeare[:1001]).exit_code == 0
    assert invoke("train", "-", "--model", path, "--seq-length", 100, input=shakespeare[1001:3001]).exit_code == 0
    d = json.loads(invoke("info", "--model", path, "--json").stdout)
    assert d["chunks_trained"] == 40 + 20
    assert d["chars_trained"] == 40 * 25 + 20 * 100 == d["chars_seen"] - d["untrained_tail"]
    assert charstream.load(path).state.chars_trained == 3000


def test_a_log_named_in_upper_case_csv_is_csv(tmp_path, shakespeare):
    log = tmp_path / "LOSS.CSV"
    r = invoke("train", "-", "--model", tmp_path / "u.npz", "--hidden-size", 8, "--report-every", 0, "--log", log,
               input=shakespeare[:500])
    assert r.exit_code == 0
    assert log.read_text().splitlines()[0].startswith("time,elapsed_s,")


# -- progress, eval and info wording, passes and budgets (moved from test_qa.py and test_review.py)

class _ClosedPipe:
    def isatty(self):
        return False

    def write(self, s):
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        raise BrokenPipeError(32, "Broken pipe")


def test_progress_on_a_closed_stderr_does_not_stop_training(shakespeare):
    from charstream.cli.show import Printer
    m = charstream.Model("", hidden_size=8, random_seed=0)
    printer = Printer(stream=_ClosedPipe(), sample_every=1e-9)
    summary = charstream.train([[shakespeare[:2000]]], model=m, progress=printer, report_every=0)
    printer.close_line()
    assert summary.chunks == m.state.chunks == 79 and printer.stream is None


def test_the_log_has_one_row_per_report_not_a_repeated_last_one(tmp_path, shakespeare):
    (tmp_path / "a.txt").write_text(shakespeare[:1001])
    r = invoke("train", tmp_path / "a.txt", "--model", tmp_path / "m.npz", "--hidden-size", "8",
            "--report-every", "0", "--log", tmp_path / "loss.csv")
    assert r.exit_code == 0, r.output
    rows = (tmp_path / "loss.csv").read_text().splitlines()
    assert len(rows) == 1 + 40 and [row.split(",")[4] for row in rows[1:]] == [str(i) for i in range(1, 41)]
    assert r.stderr.count("chunks 40 ") == 1


@pytest.fixture
def small_model(tmp_path, shakespeare):
    path = tmp_path / "s.npz"
    m = charstream.Model("", hidden_size=8, seed=0, max_vocab=12)
    with pytest.warns(CharstreamWarning, match="the vocabulary is full"):
        list(charstream.Trainer(m).train([shakespeare[:600]]))
    m.save(path)
    return path, m


def test_eval_counts_the_characters_a_full_vocabulary_reads_as_u_fffd(small_model):
    import json
    path, m = small_model
    assert m.vocab_size == 12 and "\ufffd" in m.vocab
    text = "First: qqq wxy \ufffd"
    outside = sum(c not in m.vocab for c in text)
    r = invoke("eval", "-", "--model", path, "--json", input=text)
    d = json.loads(r.stdout)
    assert d["unknown_chars"] == 0 and d["chars_read_as_unk"] == outside > 0
    r = invoke("eval", "-", "--model", path, input=text)
    assert f"{outside} characters outside it read as U+FFFD" in r.stdout


def test_eval_of_one_known_character_says_so(small_model):
    path, _ = small_model
    r = invoke("eval", "-", "--model", path, input="F")
    assert r.exit_code == 1
    assert "only one character the model knows" in r.stderr and "empty" not in r.stderr


def test_singular_counts_read_right(small_model, tmp_path):
    path, _ = small_model
    r = invoke("eval", "-", "--model", path, "--window", "2", input="Fi")
    assert "1 character scored" in r.stdout and "median of 1 window of 2" in r.stdout
    m = charstream.Model("\ufffd", hidden_size=4)
    m.save(tmp_path / "one.npz")
    assert "vocabulary     1 character: " in invoke("info", "--model", tmp_path / "one.npz").stdout


def test_info_preview_escapes_what_would_merge_or_vanish_on_screen(tmp_path):
    m = charstream.Model(["a", "\u0301", "👍", "\U0001F3FD", "\u200d", "\t", "я", "猫"], hidden_size=4)
    m.save(tmp_path / "v.npz")
    out = invoke("info", "--model", tmp_path / "v.npz").stdout
    assert "8 characters: a\\u0301👍\\U0001f3fd\\u200d\\tя猫" in out


def test_info_says_when_the_smoothed_loss_is_still_mostly_the_first_chunk(tmp_path, shakespeare):
    m = charstream.Model("", hidden_size=8, seed=0)
    list(charstream.Trainer(m).train([shakespeare[:1001]]))
    m.save(tmp_path / "m.npz")
    line = [x for x in invoke("info", "--model", tmp_path / "m.npz").stdout.splitlines() if x.startswith("recent")]
    assert "after 40 chunks 96% of it is still the first chunk's loss" in line[0]


def test_plot_script_without_matplotlib_says_what_it_needs(tmp_path):
    import subprocess
    from pathlib import Path
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "plot_log.py"
    (tmp_path / "loss.jsonl").write_text("")
    code = ("import runpy, sys; sys.modules['matplotlib'] = None; "
            f"sys.argv = ['plot_log.py', {str(tmp_path / 'loss.jsonl')!r}, {str(tmp_path / 'o.png')!r}]; "
            f"runpy.run_path({str(script)!r}, run_name='__main__')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        "Error: plot_log.py needs matplotlib, which charstream does not install: pip install matplotlib"]


def test_passes_read_file_urls_again(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.txt").write_text("Привет, мир! " * 10, encoding="utf-8")
    for i, src in enumerate(["file://a.txt", f"FILE://{tmp_path / 'a.txt'}", "a.txt"]):
        r = invoke("train", src, "--passes", "2", "--model", f"m{i}.npz", "--hidden-size", "4", "--random-seed", "0")
        assert r.exit_code == 0, r.output
        assert charstream.load(tmp_path / f"m{i}.npz").state.chars_seen == 260
    r = invoke("train", "-", "--passes", "2", "--model", "x.npz", input="abc")
    assert r.exit_code == 2 and "- is a stream" in r.stderr


def test_a_time_budget_with_no_client_exits_0_saying_so(tmp_path):
    r = run(cli("train", "--listen", "127.0.0.1:0", "--max-seconds", "0.5", "--model", tmp_path / "l.npz"),
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    last = r.stderr.decode().strip().splitlines()[-1]
    assert last.startswith("stopped after --max-seconds 0.5: no text arrived from --listen 127.0.0.1:")
    assert not (tmp_path / "l.npz").exists()
