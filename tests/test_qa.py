"""Regressions found by using charstream the way its users do: other scripts, odd inputs, pipes."""
import itertools
import warnings

import numpy as np
import pytest
from click.testing import CliRunner

import charstream
from charstream.cli import main
from charstream.errors import CharstreamWarning
from charstream.vocab import Vocab


def run(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input, catch_exceptions=False)


# -- lone surrogates: what undecodable bytes become in sys.stdin / open() under errors="surrogateescape"

def test_surrogate_escaped_bytes_train_as_u_fffd_like_the_byte_sources():
    escaped = "caf\udce9 ok, na\udcefve " * 8          # b"caf\xe9 ..." read with surrogateescape
    replaced = escaped.replace("\udce9", "\ufffd").replace("\udcef", "\ufffd")
    a, b = charstream.Model("", hidden_size=8, seed=0), charstream.Model("", hidden_size=8, seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        la = [r.loss for r in charstream.Trainer(a).train([escaped[:30], escaped[30:]])]
    assert [str(w.message) for w in caught if issubclass(w.category, CharstreamWarning)] == [
        "the text has lone surrogates (bytes that were not UTF-8, decoded with "
        "errors='surrogateescape'?): read as U+FFFD"]
    lb = [r.loss for r in charstream.Trainer(b).train([replaced])]
    assert la == lb and a.vocab == b.vocab and "\ufffd" in a.vocab
    assert not any(0xD800 <= ord(c) <= 0xDFFF for c in a.vocab)


def test_a_seed_with_invalid_bytes_reads_them_as_u_fffd():
    m = charstream.Model("", hidden_size=8, seed=0)
    list(charstream.Trainer(m).train(["caf\ufffd caf\ufffd " * 6]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # no "never seen" warning: it is U+FFFD
        got = "".join(itertools.islice(m.generate("caf\udce9", random_seed=1), 30))
    assert got == "".join(itertools.islice(m.generate("caf\ufffd", random_seed=1), 30))


def test_model_refuses_a_surrogate_in_its_vocabulary():
    with pytest.raises(ValueError, match="surrogate"):
        charstream.Model("ab\udcff")


def test_generate_writes_utf8_even_for_an_old_model_with_surrogates(tmp_path):
    m = charstream.Model("abc", hidden_size=8, seed=0)
    m.vocabulary = Vocab(["a", "\udcff", "\ud800"])        # as an older charstream could have saved
    m.params["by"][:] = [0.0, 5.0, 5.0]
    m.save(tmp_path / "old.npz")
    r = run("generate", "--model", tmp_path / "old.npz", "--length", "50", "--random-seed", "0")
    assert r.exit_code == 0, r.output
    out = r.stdout_bytes
    assert b"\xff" in out and "\ufffd".encode() in out
    assert out.replace(b"\xff", b"").decode("utf-8")


# -- progress and the loss log

class _ClosedPipe:
    def isatty(self):
        return False

    def write(self, s):
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        raise BrokenPipeError(32, "Broken pipe")


def test_progress_on_a_closed_stderr_does_not_stop_training(shakespeare):
    from charstream.progress import Progress
    m = charstream.Model("", hidden_size=8, seed=0)
    progress = Progress(m, every=0, sample_every=1e-9, stream=_ClosedPipe())
    n = 0
    for record in charstream.Trainer(m).train([shakespeare[:2000]]):
        progress.update(record)
        n += 1
    progress.report(record)
    progress.close_line()
    assert n == m.state.chunks == 79


def test_train_with_stderr_closed_still_saves(tmp_path, shakespeare):
    import subprocess
    import sys
    (tmp_path / "a.txt").write_text(shakespeare[:5000])
    p = subprocess.Popen([sys.executable, "-m", "charstream", "train", str(tmp_path / "a.txt"), "--model",
                          str(tmp_path / "m.npz"), "--hidden-size", "8", "--report-every", "0"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         cwd=tmp_path)   # not the repo root, whose source folder would shadow the package
    try:
        p.stderr.close()            # `charstream train ... 2>&1 | head -0`
        p.wait(timeout=60)
    finally:
        p.kill()
        p.wait()
    assert charstream.load(tmp_path / "m.npz").state.chunks == 199


def test_the_log_has_one_row_per_report_not_a_repeated_last_one(tmp_path, shakespeare):
    (tmp_path / "a.txt").write_text(shakespeare[:1001])
    r = run("train", tmp_path / "a.txt", "--model", tmp_path / "m.npz", "--hidden-size", "8",
            "--report-every", "0", "--log", tmp_path / "loss.csv")
    assert r.exit_code == 0, r.output
    rows = (tmp_path / "loss.csv").read_text().splitlines()
    assert len(rows) == 1 + 40 and [row.split(",")[4] for row in rows[1:]] == [str(i) for i in range(1, 41)]
    assert r.stderr.count("chunks 40 ") == 1


# -- eval and info wording

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
    r = run("eval", "-", "--model", path, "--json", input=text)
    d = json.loads(r.stdout)
    assert d["unknown_chars"] == 0 and d["chars_read_as_unk"] == outside > 0
    r = run("eval", "-", "--model", path, input=text)
    assert f"{outside} characters outside it read as U+FFFD" in r.stdout


def test_eval_of_one_known_character_says_so(small_model):
    path, _ = small_model
    r = run("eval", "-", "--model", path, input="F")
    assert r.exit_code == 1
    assert "only one character the model knows" in r.stderr and "empty" not in r.stderr


def test_singular_counts_read_right(small_model, tmp_path):
    path, _ = small_model
    r = run("eval", "-", "--model", path, "--window", "2", input="Fi")
    assert "1 character scored" in r.stdout and "median of 1 window of 2" in r.stdout
    m = charstream.Model("\ufffd", hidden_size=4)
    m.save(tmp_path / "one.npz")
    assert "vocabulary     1 character: " in run("info", "--model", tmp_path / "one.npz").stdout


# -- samplers

@pytest.fixture
def ja_model(tmp_path):
    text = "吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。" * 20
    m = charstream.Model("", hidden_size=16, seed=0)
    list(charstream.Trainer(m).train([text]))
    m.save(tmp_path / "ja.npz")
    return tmp_path / "ja.npz", m


@pytest.mark.parametrize("name, kw", [("top-k", {"top_k": 2}), ("top-k", {"top_k": 1000}),
                                      ("top-p", {"top_p": 0.3}), ("top-p", {"top_p": 1.0})])
def test_the_named_cut_sampler_takes_the_cut_it_is_given(ja_model, name, kw):
    _, m = ja_model
    got = "".join(itertools.islice(m.generate("吾輩", sampler=name, random_seed=5, **kw), 200))
    want = "".join(itertools.islice(m.generate("吾輩", random_seed=5, **kw), 200))
    assert got == want


@pytest.mark.parametrize("args, msg", [
    (["--temperature", "inf"], "Error: Invalid value for '--temperature': 'inf' is not a finite number."),
    (["--temperature", "nan"], "Error: Invalid value for '--temperature': 'nan' is not a finite number."),
    (["--top-p", "nan"], "Error: Invalid value for '--top-p': 'nan' is not a finite number."),
])
def test_non_finite_sampler_values_are_refused_like_any_bad_option(ja_model, args, msg):
    r = run("generate", "--model", ja_model[0], "--length", "5", *args)
    assert r.exit_code == 2 and r.stderr.strip().splitlines()[-1] == msg


def test_info_preview_escapes_what_would_merge_or_vanish_on_screen(tmp_path):
    m = charstream.Model(["a", "\u0301", "👍", "\U0001F3FD", "\u200d", "\t", "я", "猫"], hidden_size=4)
    m.save(tmp_path / "v.npz")
    out = run("info", "--model", tmp_path / "v.npz").stdout
    assert "8 characters: a\\u0301👍\\U0001f3fd\\u200d\\tя猫" in out


def test_info_says_when_the_smoothed_loss_is_still_mostly_the_first_chunk(tmp_path, shakespeare):
    m = charstream.Model("", hidden_size=8, seed=0)
    list(charstream.Trainer(m).train([shakespeare[:1001]]))
    m.save(tmp_path / "m.npz")
    line = [x for x in run("info", "--model", tmp_path / "m.npz").stdout.splitlines() if x.startswith("recent")]
    assert "after 40 chunks 96% of it is still the first chunk's loss" in line[0]


def test_plot_script_without_matplotlib_says_what_it_needs(tmp_path):
    import subprocess
    import sys
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
        r = run("train", src, "--passes", "2", "--model", f"m{i}.npz", "--hidden-size", "4", "--random-seed", "0")
        assert r.exit_code == 0, r.output
        assert charstream.load(tmp_path / f"m{i}.npz").state.chars_seen == 260
    r = run("train", "-", "--passes", "2", "--model", "x.npz", input="abc")
    assert r.exit_code == 2 and "- is a stream" in r.stderr


def test_numpy_scalars_are_numbers_too(ja_model):
    _, m = ja_model
    a = "".join(itertools.islice(m.generate("吾輩", temperature=np.float32(0.5), top_p=np.float32(0.75),
                                            top_k=np.int64(5), random_seed=1), 50))
    b = "".join(itertools.islice(m.generate("吾輩", temperature=float(np.float32(0.5)),
                                            top_p=float(np.float32(0.75)), top_k=5, random_seed=1), 50))
    assert a == b
    assert charstream.Trainer(m, learning_rate=np.float32(0.05)).learning_rate == float(np.float32(0.05))


@pytest.mark.parametrize("reopen", ["raise the cap", "open the vocabulary"])
def test_reopening_the_vocabulary_in_session_equals_after_a_reload(tmp_path, reopen):
    def fresh():
        if reopen == "raise the cap":
            return charstream.Model("", hidden_size=4, seed=0, max_vocab=3)
        return charstream.Model("ab\ufffd", hidden_size=4, seed=0, fixed_vocab=True)

    def reopened(m):
        if reopen == "raise the cap":
            m.max_vocab = 10
        else:
            m.fixed_vocab = False
        return m

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CharstreamWarning)
        m = fresh()
        list(charstream.Trainer(m).train(["abcd" * 10]))
        m.save(tmp_path / "m.npz")
        same = reopened(m)
        again = reopened(charstream.load(tmp_path / "m.npz"))
        la = [r.loss for r in charstream.Trainer(same).train(["cdcd" * 10])]
        lb = [r.loss for r in charstream.Trainer(again).train(["cdcd" * 10])]
    assert same.vocab == again.vocab == ("a", "b", "\ufffd", "c", "d")
    assert la == lb


def test_readme_open_recipe_gives_the_api_what_the_command_line_trains_on(tmp_path):
    data = "Всё смешалось\r\nв доме ".encode() + b"\xff\xfe" + " Облонских.\r\n".encode()
    (tmp_path / "ru.txt").write_bytes(data * 20)
    r = run("train", tmp_path / "ru.txt", "--model", tmp_path / "cli.npz", "--hidden-size", "8", "--random-seed", "3")
    assert r.exit_code == 0, r.output
    m = charstream.Model("", hidden_size=8, seed=3)
    with open(tmp_path / "ru.txt", encoding="utf-8", errors="replace", newline="") as f:
        list(charstream.Trainer(m).train(f))
    cli = charstream.load(tmp_path / "cli.npz")
    assert cli.vocab == m.vocab and "\r" in m.vocab and "\ufffd" in m.vocab
    np.testing.assert_array_equal(cli.params["Why"], m.params["Why"])


# -- plugins that call sys.exit()

def _install_dist(site, monkeypatch, module, code, entry_points):
    """A plugin distribution on sys.path, as pip leaves one, that only it may load; undo with _uninstall."""
    import importlib
    site.mkdir()
    (site / f"{module}.py").write_text(code)
    dist = module.replace("_", "-")
    info = site / f"{module}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(entry_points)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("CHARSTREAM_PLUGINS", dist)
    importlib.invalidate_caches()


def _uninstall(module):
    import importlib
    import sys
    sys.modules.pop(module, None)
    importlib.invalidate_caches()


@pytest.fixture
def exiting_dist(tmp_path, monkeypatch):
    _install_dist(tmp_path / "site", monkeypatch, "qa_exiting_plugin",
                  "import sys\n"
                  "if __import__('os').environ.get('QA_EXIT_ON_IMPORT'):\n"
                  "    sys.exit('qa_exiting_plugin needs the foo library')\n"
                  "def pick(probs, rng):\n    sys.exit('pick gave up')\n"
                  "def src(source):\n    yield 'some text '\n    sys.exit('feed gave up')\n",
                  "[charstream.samplers]\nexiter = qa_exiting_plugin:pick\n"
                  "[charstream.sources]\nexiter = qa_exiting_plugin:src\n")
    yield
    _uninstall("qa_exiting_plugin")


def test_a_plugin_that_exits_on_import_is_one_broken_plugin(exiting_dist, ja_model, monkeypatch):
    monkeypatch.setenv("QA_EXIT_ON_IMPORT", "1")
    r = CliRunner().invoke(main, ["plugins"])
    assert r.exit_code == 1
    assert "samplers (charstream generate --sampler NAME):" in r.stdout          # the listing goes on
    assert "[broken: SystemExit: qa_exiting_plugin needs the foo library]" in r.stdout
    r = CliRunner().invoke(main, ["generate", "--model", str(ja_model[0]), "--sampler", "exiter"])
    assert r.exit_code == 1 and r.stderr.strip().splitlines()[-1].startswith(
        "Error: sampler plugin 'exiter' (qa_exiting_plugin:pick, from qa-exiting-plugin 1.0) failed to load")


def test_a_plugin_that_exits_while_running_is_one_error(exiting_dist, ja_model, tmp_path):
    r = CliRunner().invoke(main, ["generate", "--model", str(ja_model[0]), "--sampler", "exiter", "--length", "5"])
    assert r.exit_code == 1 and r.stderr.strip().splitlines()[-1] == \
        "Error: sampler 'exiter' failed: SystemExit: pick gave up"
    r = CliRunner().invoke(main, ["train", "exiter://x", "--model", str(tmp_path / "e.npz")])
    assert r.exit_code == 1 and r.stderr.strip().splitlines()[-1].startswith(
        "Error: exiter://x: the 'exiter' source failed: SystemExit: feed gave up")


def test_a_source_plugin_may_return_its_whole_text_as_str_or_bytes(tmp_path, monkeypatch):
    _install_dist(tmp_path / "site", monkeypatch, "qa_whole_plugin",
                  "TEXT = 'Привет, мир! 吾輩は猫である。 ' * 20\n"
                  "def as_str(source):\n    return TEXT\n"
                  "def as_bytes(source):\n    return TEXT.encode()\n",
                  "[charstream.sources]\nwholestr = qa_whole_plugin:as_str\n"
                  "wholebytes = qa_whole_plugin:as_bytes\n")
    try:
        from charstream.sources import open_source
        text = "Привет, мир! 吾輩は猫である。 " * 20
        assert list(open_source("wholestr://x")) == [text]
        assert list(open_source("wholebytes://x")) == [text]
        r = run("train", "wholebytes://x", "--model", tmp_path / "m.npz", "--hidden-size", "4")
        assert r.exit_code == 0, r.output
    finally:
        _uninstall("qa_whole_plugin")


def test_a_new_seq_length_keeps_the_smoothed_loss_per_char(shakespeare):
    m = charstream.Model("", hidden_size=8, seed=0)
    list(charstream.Trainer(m).train([shakespeare[:2001]]))
    per_char = m.state.smooth_loss / m.state.seq_length
    t = charstream.Trainer(m, seq_length=100)
    assert m.state.smooth_loss / t.seq_length == pytest.approx(per_char)
    charstream.Trainer(m, seq_length=100)              # the same length again changes nothing
    assert m.state.smooth_loss / 100 == pytest.approx(per_char)


def test_eval_scores_a_tcp_source_as_its_help_says(ja_model):
    import socket
    import threading
    text = "吾輩は猫である。名前はまだ無い。" * 10
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(10)

    def serve():
        try:
            c, _ = srv.accept()
            with c:
                data = text.encode()
                c.sendall(data[:7])
                c.sendall(data[7:])
        finally:
            srv.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        help_text = run("eval", "--help").stdout
        assert "tcp://HOST:PORT" in help_text
        r = run("eval", f"tcp://127.0.0.1:{srv.getsockname()[1]}", "--model", ja_model[0], "--json")
        assert r.exit_code == 0, r.output
        assert '"chars_scored": %d' % (len(text) - 1) in r.stdout
    finally:
        t.join(timeout=10)
