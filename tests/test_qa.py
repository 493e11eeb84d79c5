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
    m._vocab = Vocab(["a", "\udcff", "\ud800"])        # as an older charstream could have saved
    m.params["by"][:] = [0.0, 5.0, 5.0]
    m.save(tmp_path / "old.npz")
    r = run("generate", "--model", tmp_path / "old.npz", "--length", "50", "--random-seed", "0")
    assert r.exit_code == 0, r.output
    out = r.stdout_bytes
    assert b"\xff" in out and "\ufffd".encode() in out
    assert out.replace(b"\xff", b"").decode("utf-8")
