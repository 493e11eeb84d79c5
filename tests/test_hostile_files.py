"""Hostile model files: entries under loose names, duplicates, compression bombs, headers that lie,
metadata past its bounds, and fuzzed mutations of a valid file; each is one `Error:` line, read
within the memory of the model it describes. The server keeps serving its last good model."""
import io
import json
import os
import resource
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import charstream
import charstream.store as store
from helpers import invoke

EXAMPLES = int(os.environ.get("CHARSTREAM_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """The bytes of a small valid model file (rnn, H=8), and its entries."""
    folder = tmp_path_factory.mktemp("good")
    m = charstream.Model("", hidden_size=8, seed=0)
    list(charstream.Trainer(m).train(["to be or not to be, that is the question. " * 5]))
    m.save(folder / "m.npz")
    data = (folder / "m.npz").read_bytes()
    return data, _entries(data)


def _entries(data):
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return [(i.filename, z.read(i)) for i in z.infolist()]


def _npy(a):
    f = io.BytesIO()
    np.lib.format.write_array(f, np.asanyarray(a), allow_pickle=False)
    return f.getvalue()


def _zip(entries, compress=zipfile.ZIP_STORED):
    f = io.BytesIO()
    with zipfile.ZipFile(f, "w", compress) as z:
        for name, data in entries:
            z.writestr(name, data)
    return f.getvalue()


def _with_meta(entries, **changes):
    meta = json.loads(str(np.load(io.BytesIO(dict(entries)["meta.npy"]))))
    meta.update(changes)
    return [(n, _npy(np.array(json.dumps(meta))) if n == "meta.npy" else d) for n, d in entries]


def _error(tmp_path, data):
    path = tmp_path / "hostile.npz"
    path.write_bytes(data)
    r = invoke("info", "--model", path)
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {path}: "), r.stderr
    return lines[0][len(f"Error: {path}: "):]


def test_the_good_file_reads(tmp_path, good):
    (tmp_path / "m.npz").write_bytes(good[0])
    assert invoke("info", "--model", tmp_path / "m.npz").exit_code == 0


def test_an_entry_under_its_bare_name_beside_the_real_one_is_refused(tmp_path, good):
    """numpy's NpzFile answers `Whh` for `Whh.npy`: a small `Whh.npy` passed its size check, a big `Whh` loaded."""
    data = _zip(good[1] + [("Whh", _npy(np.zeros((20, 20))))])
    assert _error(tmp_path, data) == "corrupt model file (unexpected entry 'Whh')"


def test_a_duplicate_entry_is_refused(tmp_path, good):
    with pytest.warns(UserWarning):   # zipfile warns about the duplicate name as it writes it
        data = _zip(good[1] + [("Whh.npy", dict(good[1])["Whh.npy"])])
    assert _error(tmp_path, data) == "corrupt model file (the entry 'Whh.npy' appears twice)"


def test_a_header_that_differs_from_the_meta_is_refused_before_its_data(tmp_path, good):
    entries = [(n, _npy(np.zeros((9, 8))) if n == "Whh.npy" else d) for n, d in good[1]]
    assert _error(tmp_path, _zip(entries)) == "corrupt model file (Whh must be (8, 8), got (9, 8))"
    entries = [(n, _npy(np.zeros((8, 8), np.float32)) if n == "Whh.npy" else d) for n, d in good[1]]
    assert _error(tmp_path, _zip(entries)) == "corrupt model file (Whh must be float64, got float32)"


def test_a_header_that_lies_about_its_data_is_refused(tmp_path, good):
    whh = dict(good[1])["Whh.npy"]
    entries = [(n, whh[:-8] if n == "Whh.npy" else d) for n, d in good[1]]
    assert "the entry holds 504 bytes of data, its header announces 512" in _error(tmp_path, _zip(entries))


def test_a_compression_bomb_is_refused_before_it_inflates(tmp_path, good):
    """A 288 MB zero Whh compresses to about 0.3 MB; its meta says H=6,000 (within bounds)."""
    H = 6_000
    entries = _with_meta(good[1], hidden_size=H)
    f = io.BytesIO()
    with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries:
            if name == "Whh.npy":
                info = zipfile.ZipInfo(name)
                info.compress_type = zipfile.ZIP_DEFLATED
                with z.open(info, "w", force_zip64=True) as w:
                    hdr = io.BytesIO()   # the magic and a header announcing (H, H) float64
                    np.lib.format.write_array_header_1_0(hdr, {"descr": "<f8", "fortran_order": False, "shape": (H, H)})
                    w.write(hdr.getvalue())
                    block = bytes(1 << 20)
                    for _ in range(H * H * 8 // len(block)):
                        w.write(block)
            else:
                z.writestr(name, data)
    data = f.getvalue()
    assert len(data) < 4 << 20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert "compressed entries may inflate to 268,435,456 bytes in all" in _error(tmp_path, data)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000   # KiB: nothing near 1 GB


@pytest.mark.parametrize("changes, says", [
    ({"hidden_size": 100_001}, "out-of-range hyperparameters"),
    ({"hidden_size": 8.0}, "bad 'meta'"),
    ({"layers": 65}, "layers is 65, more than 64"),
    ({"seq_length": 10**9}, "out-of-range hyperparameters"),
    ({"dtype": "float16"}, "dtype must be one of float64, float32, got 'float16'"),
    ({"lanes": 5000}, "lanes must be an integer from 1 to 4096"),
    ({"lanes": 2, "block": 100, "round_step": 0}, "missing hlanes"),
    ({"lanes": 2, "block": 100, "round_step": 4},
     "the lanes' block and round_step do not fit together (block >= seq_length > round_step's)"),
    ({"round_step": -1}, "round_step must be a non-negative integer"),
])
def test_metadata_past_its_bounds_is_refused(tmp_path, good, changes, says):
    assert _error(tmp_path, _zip(_with_meta(good[1], **changes))) == f"corrupt model file ({says})"


def test_a_huge_meta_is_refused(tmp_path, good):
    entries = [(n, _npy(np.array("x" * (store.MAX_META + 1))) if n == "meta.npy" else d) for n, d in good[1]]
    assert "its 'meta' is not a string of at most 1,048,576 characters" in _error(tmp_path, _zip(entries))
    deep = "[" * 100_000 + "]" * 100_000
    entries = [(n, _npy(np.array(deep)) if n == "meta.npy" else d) for n, d in good[1]]
    assert _error(tmp_path, _zip(entries)) == "not a charstream model (unreadable 'meta')"


def test_the_per_lane_state_reads_when_the_meta_announces_it(tmp_path, good):
    entries = _with_meta(good[1], lanes=3, block=64, round_step=0) + [("hlanes.npy", _npy(np.zeros((3, 8))))]
    path = tmp_path / "lanes.npz"
    path.write_bytes(_zip(entries))
    meta, arrays = store.read(path)
    assert arrays["hlanes"].shape == (3, 8) and meta["lanes"] == 3
    bad = _with_meta(good[1], lanes=3, block=64, round_step=0) + [("hlanes.npy", _npy(np.zeros((2, 8))))]
    assert _error(tmp_path, _zip(bad)) == "corrupt model file (hlanes must be (3, 8), got (2, 8))"
    assert _error(tmp_path, _zip(good[1] + [("hlanes.npy", _npy(np.zeros((3, 8))))])) == \
        "corrupt model file (unexpected entry 'hlanes.npy')"


def test_float32_files_are_read_with_float32_arrays(tmp_path, good):
    entries = [(n, d if n in ("meta.npy", "vocab.npy", "tail.npy") else _npy(np.load(io.BytesIO(d)).astype(np.float32)))
               for n, d in _with_meta(good[1], dtype="float32")]
    path = tmp_path / "f32.npz"
    path.write_bytes(_zip(entries))
    meta, arrays = store.read(path)
    assert arrays["Whh"].dtype == np.float32 and arrays["hprev"].dtype == np.float32
    mixed = [(n, _npy(np.zeros(8)) if n == "hprev.npy" else d) for n, d in entries]
    assert _error(tmp_path, _zip(mixed)) == "corrupt model file (hprev must be float32, got float64)"


def test_a_compressed_model_within_the_bound_reads(tmp_path, good):
    path = tmp_path / "c.npz"
    path.write_bytes(_zip(good[1], zipfile.ZIP_DEFLATED))
    assert store.read(path)[1]["Whh"].shape == (8, 8)


def _mutations():
    flip = st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(1, 255))
    cut = st.tuples(st.just("cut"), st.integers(0, 10**6), st.just(0))
    insert = st.tuples(st.just("insert"), st.sampled_from(["Whh", "junk.npy", "Wxh.npy", "meta", "x/../Whh.npy"]),
                       st.integers(0, 3))
    meta = st.tuples(st.just("meta"), st.sampled_from(["hidden_size", "layers", "cell", "seq_length", "format_version",
                                                       "max_vocab", "lanes", "dtype", "rng", "chunks", "smooth_loss"]),
                     st.one_of(st.integers(-2, 10**6), st.none(), st.text(max_size=5), st.floats(),
                               st.lists(st.integers(), max_size=3)))
    return st.lists(st.one_of(flip, cut, insert, meta), min_size=1, max_size=3)


@FUZZ
@given(ops=_mutations())
def test_fuzzed_model_files_load_or_get_one_error_line(tmp_path, good, ops):
    entries = list(good[1])
    data = None
    for op, a, b in ops:
        if op == "meta":
            entries = _with_meta(entries, **{a: b})
        elif op == "insert":
            entries = entries + [(a, _npy(np.zeros((b + 1, 9))))]
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # zipfile's duplicate-name warning
        data = bytearray(_zip(entries))
    for op, a, b in ops:
        if op == "flip" and data:
            data[a % len(data)] ^= b
        elif op == "cut":
            data = data[:a % (len(data) + 1)]
    path = tmp_path / "fuzzed.npz"
    path.write_bytes(bytes(data))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    r = invoke("generate", "--model", path, "--length", "20", "--random-seed", "0")
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output
    if r.exit_code != 0:
        errors = r.stderr.splitlines()
        assert r.exit_code == 1 and len(errors) == 1 and errors[0].startswith("Error: "), r.stderr
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000   # KiB


def test_the_server_keeps_its_last_good_model_whatever_file_appears(tmp_path, good):
    pytest.importorskip("starlette", reason="the server extra is not installed: pip install '.[serve]'")
    from starlette.testclient import TestClient
    from charstream.server.app import create_app
    from charstream.server.models import ModelRegistry
    path = tmp_path / "served.npz"
    path.write_bytes(good[0])
    lines = []
    hostile = [
        _zip(good[1] + [("Whh", _npy(np.zeros((20, 20))))]),
        _zip(_with_meta(good[1], hidden_size=10**9)),
        good[0][: len(good[0]) // 3],
        b"PK\x03\x04" + bytes(200),
        _zip(_with_meta(good[1], rng=[1, 2])),
        _zip(_with_meta(good[1], format_version=99)),
    ]
    with TestClient(create_app(path, registry=ModelRegistry(path, log=lines.append)), base_url="http://127.0.0.1") as c:
        want = c.post("/v1/completions", json={"prompt": "to", "max_tokens": 50, "seed": 1}).json()["choices"][0]["text"]
        for i, data in enumerate(hostile):
            tmp = tmp_path / f"{i}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, path)
            r = c.post("/v1/completions", json={"prompt": "to", "max_tokens": 50, "seed": 1})
            assert r.status_code == 200 and r.json()["choices"][0]["text"] == want
            assert c.get("/info").json()["hidden_size"] == 8
    assert len(lines) == len(hostile) and all(line.endswith("still serving the last good model") for line in lines)
