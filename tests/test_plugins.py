"""Plugins: a fake third-party distribution (a temporary dist-info on sys.path, never installed)
drives a source scheme and a sampler through the API and the command line; broken ones stay local."""
import importlib
import itertools
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner

import charstream
from charstream import plugins
from charstream.cli import main
from charstream.errors import CharstreamError
from charstream.sources import open_source
from helpers import cli, invoke, popen

MODULE = "fake_charstream_plugin"
DIST = "fake-charstream-plugin"

CODE = '''
"""A third-party charstream plugin, as a plugin author would write it."""
import numpy as np


def open_repeat(source):
    """repeat://TEXT*N: TEXT repeated N times, in pieces, some as bytes split mid-character."""
    text, _, n = source[len("repeat://"):].rpartition("*")
    data = (text * int(n)).encode()
    for i in range(0, len(data), 7):
        piece = data[i:i + 7]
        yield piece if i % 2 else piece.decode("utf-8", "surrogateescape") if piece.isascii() else piece


def open_failing(source):
    yield "some text "
    raise RuntimeError("the feed went away")


def last(probs, rng):
    """Always the last character of the vocabulary; checks what it is given on the way."""
    assert probs.dtype == np.float64 and abs(probs.sum() - 1) < 1e-9, probs
    assert isinstance(rng, np.random.Generator)
    return len(probs) - 1


def out_of_range(probs, rng):
    return len(probs)


not_callable = 42
'''

ENTRY_POINTS = f'''
[charstream.sources]
repeat = {MODULE}:open_repeat
failing = {MODULE}:open_failing
tcp = {MODULE}:open_repeat
brokensrc = {MODULE}_missing:nothing

[charstream.samplers]
last = {MODULE}:last
out-of-range = {MODULE}:out_of_range
broken = {MODULE}_missing:nothing
notcallable = {MODULE}:not_callable
'''


def make_dist(folder):
    """A distribution as pip would leave it: the module and NAME-VERSION.dist-info/{METADATA,entry_points.txt}."""
    folder.mkdir(exist_ok=True)
    (folder / f"{MODULE}.py").write_text(CODE)
    info = folder / f"{MODULE}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {DIST}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(ENTRY_POINTS))
    return folder


@pytest.fixture
def fake_dist(tmp_path, monkeypatch):
    """Register the fake distribution for this test only (sys.path), and unregister it after."""
    folder = make_dist(tmp_path / "site")
    monkeypatch.syspath_prepend(str(folder))
    importlib.invalidate_caches()
    yield folder
    sys.modules.pop(MODULE, None)
    importlib.invalidate_caches()


def test_nothing_is_registered_without_the_fake_distribution():
    assert plugins.names(plugins.SOURCES) == ["file", "tcp"]
    assert plugins.names(plugins.SAMPLERS) == ["temperature", "greedy", "top-k", "top-p"]


def test_discovery_names_where_each_plugin_comes_from_and_imports_nothing(fake_dist):
    found = {(p.group, p.name): p for p in plugins.discover(plugins.SOURCES) + plugins.discover(plugins.SAMPLERS)}
    assert MODULE not in sys.modules
    repeat = found[(plugins.SOURCES, "repeat")]
    assert repeat.origin == f"{DIST} 1.0" and not repeat.builtin and repeat.value == f"{MODULE}:open_repeat"
    assert found[(plugins.SAMPLERS, "greedy")].builtin
    assert "repeat" in plugins.names(plugins.SOURCES) and "last" in plugins.names(plugins.SAMPLERS)


def test_a_plugin_cannot_take_a_built_in_name(fake_dist):
    tcp = [p for p in plugins.discover(plugins.SOURCES) if p.name == "tcp"]
    assert [p.builtin for p in tcp] == [True, False] and tcp[1].shadowed_by.endswith("built-in")
    assert plugins.load(plugins.SOURCES, "tcp") is charstream.sources.open_tcp


def test_built_ins_work_without_installed_metadata(monkeypatch):
    monkeypatch.setattr(plugins, "_entry_points", lambda group: [])
    assert plugins.names(plugins.SAMPLERS) == ["temperature", "greedy", "top-k", "top-p"]
    assert plugins.load(plugins.SAMPLERS, "greedy") is charstream.samplers.greedy
    assert all(p.origin == "charstream, built-in" for p in plugins.discover(plugins.SOURCES))


def test_the_environment_can_restrict_which_distributions_load(fake_dist, monkeypatch):
    monkeypatch.setenv("CHARSTREAM_PLUGINS", "")
    assert "repeat" not in plugins.names(plugins.SOURCES) and "tcp" in plugins.names(plugins.SOURCES)
    monkeypatch.setenv("CHARSTREAM_PLUGINS", f"other, {DIST.upper()}")
    assert "repeat" in plugins.names(plugins.SOURCES)


def test_a_plugin_source_through_the_api(fake_dist):
    assert "".join(open_source("repeat://Мороз 春*5")) == "Мороз 春" * 5
    m = charstream.Model("", hidden_size=8, seed=0)
    recs = list(charstream.Trainer(m).train(open_source("repeat://ab春*40")))
    assert m.vocab == ("a", "b", "春") and recs and all(np.isfinite(r.loss) for r in recs)


def test_a_plugin_sampler_through_the_api(fake_dist):
    m = charstream.Model("xyz", hidden_size=4, seed=0)
    assert "".join(itertools.islice(m.generate("x", sampler="last"), 30)) == "z" * 30
    with pytest.raises(CharstreamError, match=r"sampler 'out-of-range' returned 3, not an index in \[0, 3\)"):
        next(m.generate(sampler="out-of-range"))


@pytest.mark.parametrize("name, msg", [
    ("broken", f"sampler plugin 'broken' ({MODULE}_missing:nothing, from {DIST} 1.0) failed to load: "
               f"ModuleNotFoundError: No module named '{MODULE}_missing'"),
    ("notcallable", f"sampler plugin 'notcallable' ({MODULE}:not_callable, from {DIST} 1.0) is not callable"),
])
def test_a_broken_plugin_is_one_line_naming_it(fake_dist, name, msg, tmp_path):
    with pytest.raises(plugins.PluginError, match=f"^{re.escape(msg)}$"):
        charstream.Model("ab", hidden_size=4).generate(sampler=name)
    m = charstream.Model("ab", hidden_size=4, seed=0)
    m.save(tmp_path / "m.npz")
    r = CliRunner().invoke(main, ["generate", "--model", str(tmp_path / "m.npz"), "--sampler", name])
    assert r.exit_code == 1 and r.stderr == f"Error: {msg}\n"
    # the commands that do not use it are untouched
    assert CliRunner().invoke(main, ["generate", "--model", str(tmp_path / "m.npz"), "--length", "5"]).exit_code == 0
    assert CliRunner().invoke(main, ["train", "repeat://ab*30", "--model", str(tmp_path / "m.npz")]).exit_code == 0


def test_charstream_plugins_lists_sources_and_samplers_with_their_origin(fake_dist):
    r = CliRunner().invoke(main, ["plugins"])
    out = " ".join(r.stdout.split())   # columns are aligned with spaces
    assert f"repeat {MODULE}:open_repeat from {DIST} 1.0" in out
    assert "greedy" in out and "charstream.samplers:greedy from charstream" in out and "built-in" in out
    assert "[not used: the name is taken by charstream" in out
    assert "broken" in out and "[broken: ModuleNotFoundError" in out
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 3 and any("'broken'" in e for e in errors) and any("'notcallable'" in e for e in errors)
    assert any("source plugin 'brokensrc'" in e for e in errors)
    assert r.exit_code == 1
    r = CliRunner().invoke(main, ["plugins", "--no-load"])
    assert r.exit_code == 0 and "repeat" in r.stdout and r.stderr == ""


def test_a_broken_source_plugin_is_refused_before_training(fake_dist, tmp_path):
    r = CliRunner().invoke(main, ["train", "brokensrc://x", "--model", str(tmp_path / "b.npz")])
    assert r.exit_code == 1 and not (tmp_path / "b.npz").exists()
    assert r.stderr == (f"Error: source plugin 'brokensrc' ({MODULE}_missing:nothing, from {DIST} 1.0) failed "
                        f"to load: ModuleNotFoundError: No module named '{MODULE}_missing'\n")
    assert "".join(open_source("REPEAT://ab*2")) == "abab"     # schemes are case-insensitive


def test_a_source_plugin_that_fails_mid_stream_is_one_clear_error(fake_dist, tmp_path):
    r = CliRunner().invoke(main, ["train", "failing://x", "--model", str(tmp_path / "f.npz")])
    assert r.exit_code == 1
    assert r.stderr.strip().splitlines()[-1] == (
        "Error: failing://x: the 'failing' source failed: RuntimeError: the feed went away; "
        f"what was trained before it is saved to {tmp_path / 'f.npz'}")
    kept = charstream.load(tmp_path / "f.npz")   # the text that arrived before the failure is not lost
    assert kept.state.chars_seen == 10 and charstream.vocab.to_text(kept.state.tail) == "some text "


def test_a_fake_distribution_drives_train_and_generate_end_to_end(tmp_path):
    """Real processes, with the distribution only on PYTHONPATH: `train repeat://...` then
    `generate --sampler last`."""
    folder = make_dist(tmp_path / "site")
    env = dict(os.environ, PYTHONPATH=str(folder))
    path = tmp_path / "p.npz"
    train = popen(cli("train", "repeat://Мороз и солнце; 春はあけぼの *40", "--model", str(path),
                        "--hidden-size", "8", "--report-every", "100", "--sample-every", "0"),
                   env=env, stderr=subprocess.PIPE)
    err = train.communicate(timeout=60)[1].decode()
    assert train.returncode == 0, err
    model = charstream.load(path)
    assert model.state.chars_seen == len("Мороз и солнце; 春はあけぼの ") * 40
    assert model.vocab == tuple(dict.fromkeys("Мороз и солнце; 春はあけぼの "))
    gen = popen(cli("generate", "--model", str(path), "--seed", "Мо", "--length", "25", "--sampler", "last"),
                 env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = gen.communicate(timeout=60)
    assert gen.returncode == 0, err
    assert out.decode() == "Мо" + model.vocab[-1] * 25   # exactly the seed and --length characters
    listing = popen(cli("plugins"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = listing.communicate(timeout=60)
    assert f"from {DIST} 1.0" in out.decode() and listing.returncode == 1   # the fake has broken entries


def test_a_distribution_with_unreadable_metadata_breaks_nothing(tmp_path, monkeypatch):
    info = tmp_path / "bad" / "bad_dist-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bad-dist\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[charstream.samplers]\nno equals sign here\n")
    monkeypatch.syspath_prepend(str(tmp_path / "bad"))
    with pytest.warns(charstream.CharstreamWarning, match="skipping the plugins of .*bad_dist-1.0.dist-info"):
        assert plugins.names(plugins.SAMPLERS) == ["temperature", "greedy", "top-k", "top-p"]
    m = charstream.Model("ab", hidden_size=4, seed=0)
    assert len("".join(itertools.islice(m.generate(sampler="greedy"), 5))) == 5


def shout(source):
    """A source defined right here, registered by a replaced entry_points()."""
    yield source.split("://", 1)[1].upper()


def first(probs, rng):
    return 0


@pytest.mark.parametrize("target", ["importlib.metadata.entry_points", "charstream.plugins.entry_points"])
def test_a_replaced_entry_points_function_registers_and_unregisters(monkeypatch, target):
    from importlib import metadata
    monkeypatch.delenv("CHARSTREAM_PLUGINS")   # hand-made entry points belong to no distribution
    real = metadata.entry_points
    fake = [metadata.EntryPoint("shout", "test_plugins:shout", plugins.SOURCES),
            metadata.EntryPoint("first", "test_plugins:first", plugins.SAMPLERS)]

    def entry_points():   # charstream's own entry points, plus the fakes
        return metadata.EntryPoints([ep for g in plugins.GROUPS for ep in real().select(group=g)] + fake)

    with monkeypatch.context() as mp:
        mp.setattr(target, entry_points)
        assert "".join(open_source("shout://hello")) == "HELLO"
        m = charstream.Model("xyz", hidden_size=4, seed=0)
        assert "".join(itertools.islice(m.generate(sampler="first"), 5)) == "xxxxx"
        assert [p.origin for p in plugins.discover(plugins.SOURCES) if p.name == "shout"] == \
            ["a distribution with no name"]
    assert "shout" not in plugins.names(plugins.SOURCES)


def test_plugins_help_shows_an_example():
    r = CliRunner().invoke(main, ["plugins", "--help"])
    assert r.exit_code == 0 and "Example" in r.output and "charstream plugins" in r.output


def test_bytes_from_a_source_plugin_meet_the_binary_policy(fake_dist):
    with pytest.raises(charstream.CharstreamError, match="looks like a binary file"):
        list(open_source("repeat://ab\x00*5"))   # its second piece is bytes holding a NUL


# -- plugins that call sys.exit(), or return their whole text (moved from test_qa.py and test_review.py)

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
        r = invoke("train", "wholebytes://x", "--model", tmp_path / "m.npz", "--hidden-size", "4")
        assert r.exit_code == 0, r.output
    finally:
        _uninstall("qa_whole_plugin")
