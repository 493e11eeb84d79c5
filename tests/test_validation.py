"""Validation while training: the held-out text, the best model kept in the file and used by every
reader, patience, passes that fill a budget, a split run equal to one run to the bit (best and dropout
included), the command and the library writing the same file, and bad input refused."""
import json
import math

import numpy as np
import pytest

import charstream
from charstream import store
from charstream import validation as val
from helpers import assert_same_file, invoke

OPTS = dict(cell="lstm", layers=2, hidden_size=32, random_seed=3, val_fraction=0.2, validate_every=700, dropout=0.3,
            learning_rate=0.03, seq_length=25)


def _text(tmp_path, shakespeare, n=3000):
    path = tmp_path / "a.txt"
    path.write_text(shakespeare[:n], encoding="utf-8")
    return path


# Two lanes learn more slowly per pass, and float32's rounding differs between kernel paths: 20 passes
# overfit on every path (avx512, avx2, baseline), so that the best validated model is not the last.
@pytest.mark.parametrize("extra, passes", [({}, (6, 9)), (dict(lanes=2, dtype="float32"), (8, 12))])
def test_a_run_split_in_two_equals_one_run_best_model_included(tmp_path, shakespeare, extra, passes):
    text = _text(tmp_path, shakespeare)
    one = charstream.train([str(text)], model=tmp_path / "one.npz", passes=sum(passes), **OPTS, **extra)
    assert one.validations >= 10
    first = charstream.train([str(text)], model=tmp_path / "two.npz", passes=passes[0], **OPTS, **extra)
    second = charstream.train([str(text)], model=tmp_path / "two.npz", passes=passes[1], val_fraction=0.2,
                              validate_every=700, dropout=0.3)
    assert first.validations + second.validations == one.validations
    if not extra:   # the first part's end beat its best validated: the second goes on from the validated one
        assert "final_loss" in first.validation and "final_loss" not in one.validation
    assert_same_file(tmp_path / "one.npz", tmp_path / "two.npz")
    v = one.validation
    assert v["best_chars"] < v["chars"] and v["since_best"] > 0, "the best is not the last: both are kept"
    best, current = charstream.load(tmp_path / "one.npz"), charstream.load(tmp_path / "one.npz", resume=True)
    assert any(not np.array_equal(best.params[k], current.params[k]) for k in best.params)
    assert current.best is not None and all(np.array_equal(best.params[k], current.best["params"][k])
                                            for k in best.params)
    held = val.split_held_out(shakespeare[:3000], 0.2)[1]
    assert val.score(best, held)[0] == v["best_loss"]     # the kept parameters are the ones that scored best
    assert best.file_format_version == 4


def test_the_held_out_part_is_never_trained_and_readers_use_the_best(tmp_path, shakespeare):
    text = _text(tmp_path, shakespeare, 2000)
    s = charstream.train([str(text)], model=tmp_path / "m.npz", passes=4, val_fraction=0.25, validate_every=500,
                         hidden_size=8, random_seed=1, dropout=0)
    assert s.held_out == 500 and s.chars_seen == 4 * 1500
    trained, held = val.split_held_out(shakespeare[:2000], 0.25)
    assert held == shakespeare[750:1250] and trained == shakespeare[:750] + shakespeare[1250:2000]
    ref = charstream.Model("", hidden_size=8, random_seed=1)
    list(charstream.Trainer(ref).train([trained] * 4))
    current = charstream.load(tmp_path / "m.npz", resume=True)
    assert all(np.array_equal(ref.params[k], current.params[k]) for k in ref.params)   # trained on the first 75% only
    (tmp_path / "held.txt").write_text(held, encoding="utf-8")
    r = invoke("eval", tmp_path / "held.txt", "--model", tmp_path / "m.npz", "--fresh-state")
    assert r.exit_code == 0, r.output
    best = charstream.load(tmp_path / "m.npz")
    assert f"{best.evaluate(held, fresh_state=True):.4f}" in r.output
    info = json.loads(invoke("info", "--model", tmp_path / "m.npz", "--json").output)
    assert info["validation"]["best_loss"] == s.validation["best_loss"] and info["validation"]["count"] == s.validations
    shown = invoke("info", "--model", tmp_path / "m.npz").output
    if "final_loss" in s.validation:   # the model at the end beat the best validated one (the next test)
        assert "this is the model at the end" in shown
    else:
        assert "this is the best model" in shown


def test_the_model_at_the_end_is_kept_when_it_beats_the_best_validated(tmp_path, shakespeare):
    text = _text(tmp_path, shakespeare, 2000)
    s = charstream.train([str(text)], model=tmp_path / "m.npz", passes=4, val_fraction=0.25, validate_every=1100,
                         hidden_size=16, random_seed=1, dropout=0, learning_rate=0.05)
    v = s.validation
    assert v["chars"] == 5500 and s.model.state.chars_trained == 5975     # 475 characters after the last validation
    assert v["final_chars"] == 5975 and v["final_loss"] < v["best_loss"]
    held = val.split_held_out(shakespeare[:2000], 0.25)[1]
    reader, resumed = charstream.load(tmp_path / "m.npz"), charstream.load(tmp_path / "m.npz", resume=True)
    assert all(np.array_equal(reader.params[k], resumed.params[k]) for k in reader.params)   # readers: the end
    assert val.score(reader, held)[0] == v["final_loss"]
    assert val.score(charstream.Model.from_arrays(*_best_as_plain(tmp_path / "m.npz")), held)[0] == v["best_loss"]
    assert "final_loss" not in resumed.validation and resumed.validation["best_loss"] == v["best_loss"]
    assert reader.file_format_version == 5
    out = invoke("train", text, "--model", tmp_path / "m.npz", "--passes", 1, "--val-fraction", 0.25,
                 "--validate-every", 1100).output
    assert "validation" in out


def test_a_kept_end_model_without_its_validated_one_is_refused(tmp_path, shakespeare):
    text = _text(tmp_path, shakespeare, 2000)
    charstream.train([str(text)], model=tmp_path / "m.npz", passes=4, val_fraction=0.25, validate_every=1100,
                     hidden_size=16, random_seed=1, dropout=0, learning_rate=0.05)
    meta, arrays = store.read(tmp_path / "m.npz")
    assert meta["final_kept"]
    for name, (m, a) in {
        "no validated Why": (meta, {k: x for k, x in arrays.items() if k != store.VALIDATED + "Why"}),
        "no best": (dict(meta, best_kept=False), arrays),
        "no final loss": (dict(meta, validation={k: x for k, x in meta["validation"].items() if k != "final_loss"}),
                          arrays),
    }.items():
        bad = tmp_path / f"{name}.npz"
        store.write(bad, {k: x for k, x in m.items() if k not in ("format", "format_version")}, arrays=a)
        r = invoke("generate", "--model", bad, "--length", 5)
        assert r.exit_code != 0 and "corrupt model file" in r.output and "Traceback" not in r.output, (name, r.output)


def _best_as_plain(path):
    """(meta, arrays) of a file whose best validated model stands under the plain names."""
    meta, arrays = store.read(path)
    arrays = dict(arrays)
    for k in list(arrays):
        if k.startswith(store.VALIDATED):
            arrays[k[len(store.VALIDATED):]] = arrays.pop(k)
    return dict(meta, final_kept=False), arrays


def test_patience_stops_and_a_budget_fills_passes(tmp_path, shakespeare):
    text = _text(tmp_path, shakespeare, 1500)
    s = charstream.train([str(text)], model=tmp_path / "p.npz", max_chars=200_000, val_fraction=0.2,
                         validate_every=1200, patience=2, hidden_size=32, cell="lstm", learning_rate=0.02)
    assert s.stopped == "patience" and s.validation["since_best"] == 2 and s.passes is None
    assert 1200 < s.chars_seen < 200_000
    big = tmp_path / "big.txt"
    big.write_text(shakespeare[:3000], encoding="utf-8")
    s = charstream.train([str(big)], model=tmp_path / "b.npz", max_chars=8000, hidden_size=8)
    assert s.chars_seen == 8000 and s.stopped == "max_chars" and s.held_out == 150   # several passes, 5% held out
    s = charstream.train([str(text)], model=tmp_path / "c.npz", hidden_size=8)
    assert s.chars_seen == 1500 and s.validation is None and s.passes == 1          # no budget: one pass


def test_the_default_holds_out_at_most_20000_characters_in_all(tmp_path, shakespeare):
    paths = []
    for i, reps in enumerate((15, 10)):    # 300,000 and 200,000 characters: 5% would be 25,000
        paths.append(tmp_path / f"t{i}.txt")
        paths[-1].write_text(shakespeare[:20_000] * reps, encoding="utf-8")
    s = charstream.train([str(p) for p in paths], model=tmp_path / "m.npz", passes=2, max_chars=1000, hidden_size=8)
    assert s.held_out == val.DEFAULT_MAX_CHARS == 20_000       # 12,000 of the first, 8,000 of the second
    s = charstream.train([str(paths[1])], model=tmp_path / "f.npz", passes=2, max_chars=1000, hidden_size=8,
                         val_fraction=0.05)
    assert s.held_out == 10_000                                 # a fraction given is taken as given


def test_progress_the_log_and_the_history_carry_the_validation_loss(tmp_path, shakespeare):
    text = _text(tmp_path, shakespeare, 2000)
    reports = []
    s = charstream.train([str(text)], model=tmp_path / "m.npz", passes=6, val_fraction=0.2, validate_every=1000,
                         hidden_size=8, log=str(tmp_path / "log.jsonl"), report_every=0, progress=reports.append)
    rows = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert rows[-1]["val_nats_per_char"] == s.validation["loss"] == reports[-1].val_nats_per_char
    assert rows[-1]["best_val_nats_per_char"] == s.validation["best_loss"]
    points = charstream.load(tmp_path / "m.npz").history.points
    with_val = [p[3] for p in points if len(p) > 3]
    assert len(with_val) == s.validations and with_val[-1] == s.validation["loss"]
    r = invoke("train", text, "--model", tmp_path / "n.npz", "--passes", 3, "--hidden-size", 8, "--report-every", 0,
               "--validate-every", 1000)
    assert r.exit_code == 0 and "val " in r.output and "best model kept" in r.output
    r = invoke("train", "-", "--model", tmp_path / "s.npz", "--hidden-size", 8, "--report-every", 0,
               input=shakespeare[:1000])
    assert "each chunk scored before it trains" in r.output and "best model" not in r.output


def test_memorizing_is_said_once(tmp_path, shakespeare):
    text = _text(tmp_path, shakespeare, 1200)
    r = invoke("train", text, "--model", tmp_path / "m.npz", "--passes", 80, "--val-fraction", 0.25, "--cell", "lstm",
               "--hidden-size", 64, "--learning-rate", 0.01, "--validate-every", 1800, "--report-every", 0,
               "--sample-every", 0)
    assert r.exit_code == 0, r.output
    said = [line for line in r.output.splitlines() if line.startswith("Warning: the model is memorizing")]
    assert len(said) == 1 and "--patience" in said[0] and "--dropout" in said[0], r.output[-2000:]


def test_the_command_and_the_library_write_the_same_file(tmp_path, shakespeare):
    text = _text(tmp_path, shakespeare)
    (tmp_path / "v.txt").write_text(shakespeare[5000:5600], encoding="utf-8")
    r = invoke("train", text, "--model", tmp_path / "cli.npz", "--cell", "gru", "--hidden-size", 8, "--passes", 3,
               "--validate", tmp_path / "v.txt", "--patience", 3, "--dropout", 0.2, "--validate-every", 800,
               "--random-seed", 2, "--report-every", 0, "--sample-every", 0)
    assert r.exit_code == 0, r.output
    charstream.train([str(text)], model=tmp_path / "lib.npz", cell="gru", hidden_size=8, passes=3,
                     validate=str(tmp_path / "v.txt"), patience=3, dropout=0.2, validate_every=800, random_seed=2)
    assert_same_file(tmp_path / "cli.npz", tmp_path / "lib.npz")
    r = invoke("train", text, "--model", tmp_path / "cli2.npz", "--max-chars", 9000, "--hidden-size", 8,
               "--random-seed", 4, "--report-every", 0, "--sample-every", 0)
    assert r.exit_code == 0, r.output
    charstream.train([str(text)], model=tmp_path / "lib2.npz", max_chars=9000, hidden_size=8, random_seed=4)
    assert_same_file(tmp_path / "cli2.npz", tmp_path / "lib2.npz")


BAD = [
    (["--validate", "{empty}"], "gives 0 characters"),
    (["--validate", "{short}"], "a validation text needs at least 100"),
    (["--validate", "{missing}"], "the validation source"),
    (["--val-fraction", "0"], "--val-fraction"),
    (["--val-fraction", "0.6"], "--val-fraction"),
    (["--val-fraction", "nan"], "--val-fraction"),
    (["--patience", "-1"], "--patience"),
    (["--dropout", "1"], "--dropout"),
    (["--dropout", "-0.1"], "--dropout"),
    (["--val-fraction", "0.01"], "a validation text needs at least 100"),
    (["--val-fraction", "0.1", "--validate", "{short}"], "not both"),
    (["--patience", "2", "--no-validation"], "patience counts validations"),
]


@pytest.mark.parametrize("args,message", BAD)
@pytest.mark.parametrize("existing", [False, True])
def test_bad_input_is_one_error_line_and_no_file_changes(tmp_path, shakespeare, args, message, existing):
    text = _text(tmp_path, shakespeare, 3000)
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "short.txt").write_text("abc" * 10)
    names = dict(empty=tmp_path / "empty.txt", short=tmp_path / "short.txt", missing=tmp_path / "nope.txt")
    model = tmp_path / "m.npz"
    if existing:
        charstream.train([str(text)], model=model, hidden_size=8)
        before = model.read_bytes()
    r = invoke("train", text, "--model", model, "--hidden-size", 8, *[a.format(**names) for a in args])
    assert r.exit_code == 2, r.output
    errors = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0], r.output
    assert model.read_bytes() == before if existing else not model.exists()


def test_the_library_refuses_the_same(tmp_path, shakespeare):
    text = _text(tmp_path, shakespeare, 3000)
    for options, message in ((dict(val_fraction=0.0), "val_fraction must be"), (dict(patience=-1), "patience"),
                             (dict(dropout=1.0), "dropout must be a rate"), (dict(dropout=math.nan), "dropout"),
                             (dict(validate=["x" * 10]), "needs at least 100")):
        with pytest.raises(charstream.CharstreamError, match=message):
            charstream.train([str(text)], model=tmp_path / "m.npz", **options)
    with pytest.raises(charstream.CharstreamError, match="is not a file"):
        charstream.train([[shakespeare[:500]]], model=tmp_path / "m.npz", val_fraction=0.2)
    assert not (tmp_path / "m.npz").exists()
    held = shakespeare[3000:3400] + "\u263a"
    s = charstream.train([[shakespeare[:2000]]], model=tmp_path / "m.npz", validate=[held], hidden_size=8,
                         validate_every=500)
    assert s.validation["unknown"] >= sum(c not in s.model.vocabulary for c in held) >= 1 and s.validations == 3
