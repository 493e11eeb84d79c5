"""Shared fixtures: small texts copied into tests/data, and the numpy oracle on the path."""
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).resolve().parent.parent
# Test the installed package (with its compiled kernel), not the source folder that `python -m pytest`
# puts on sys.path; an editable install still resolves to the source folder through its own hook.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT]
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def shakespeare():
    return (DATA / "shakespeare-20k.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def multilingual():
    return (DATA / "multilingual.txt").read_text(encoding="utf-8")


@pytest.fixture(autouse=True)
def isolated_model_home(tmp_path, monkeypatch):
    """No test touches the user's default model: CHARSTREAM_MODEL points into tmp_path."""
    monkeypatch.setenv("CHARSTREAM_MODEL", str(tmp_path / "default-model.npz"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    # Plugins installed on the machine (a user's, a third party's) are not the tests' business: only
    # the tests' own fake distribution may load (test_plugins.DIST).
    monkeypatch.setenv("CHARSTREAM_PLUGINS", "fake-charstream-plugin")
    yield


@pytest.fixture
def ja_model(tmp_path):
    """A small model trained on Japanese, and the file it is saved in."""
    import charstream
    text = "吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。" * 20
    m = charstream.Model("", hidden_size=16, seed=0)
    list(charstream.Trainer(m).train([text]))
    m.save(tmp_path / "ja.npz")
    return tmp_path / "ja.npz", m
