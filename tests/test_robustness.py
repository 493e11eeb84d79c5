"""Every bad input gets one clear line on stderr and leaves the model file as it was (in-process CLI)."""
import errno
import json
import os
import sys
import zipfile

import numpy as np
import pytest

import charstream
import charstream.checkpoint
import charstream.store
import charstream.sources
from charstream.lock import WriterLock
from helpers import invoke


def error_line(r):
    """The one `Error: ...` line of a failed command, checking there is no traceback and no other error."""
    assert r.exit_code != 0
    assert "Traceback" not in r.output + r.stderr
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, r.stderr
    return errors[0]


@pytest.fixture
def model(tmp_path, shakespeare):
    path = tmp_path / "m.npz"
    r = invoke("train", "-", "--model", path, "--hidden-size", "8", "--random-seed", "1", input=shakespeare[:2000])
    assert r.exit_code == 0, r.output
    return path


def folder_files(folder):
    return sorted(p.name for p in folder.iterdir())


# ---- model files that are not ours: each `Error: <path>: <what>`, exit 1, through the CLI ----

def _bad_model_files(tmp_path, good):
    files = {}
    files["truncated.npz"] = good.read_bytes()[: len(good.read_bytes()) // 2]
    files["random.npz"] = np.random.default_rng(0).bytes(4000)
    files["empty.npz"] = b""
    with zipfile.ZipFile(tmp_path / "zip.tmp", "w") as z:
        z.writestr("readme.txt", "a zip that is not a model")
    files["foreign.npz"] = (tmp_path / "zip.tmp").read_bytes()

    class Boom:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    evil = np.empty(1, dtype=object)
    evil[0] = Boom()
    with open(tmp_path / "evil.tmp", "wb") as f:
        np.savez(f, meta=evil, Wxh=evil)
    files["pickled.npz"] = (tmp_path / "evil.tmp").read_bytes()
    with np.load(good) as z:
        arrays = dict(z)
    meta = json.loads(str(arrays["meta"]))
    meta["format_version"] = 99
    with open(tmp_path / "newer.tmp", "wb") as f:
        np.savez(f, **dict(arrays, meta=np.array(json.dumps(meta))))
    files["newer.npz"] = (tmp_path / "newer.tmp").read_bytes()
    return files


EXPECTED = {
    "truncated.npz": ": corrupt model file (a damaged or truncated archive",
    "random.npz": ": not a charstream model (not an .npz archive)",
    "empty.npz": ": not a charstream model (not an .npz archive): the file is empty",
    "foreign.npz": ": not a charstream model (no 'meta' entry)",
    "pickled.npz": ": holds pickled objects, which charstream never loads",
    "newer.npz": f": written by a newer charstream (format 99; this one reads up to {charstream.store.FORMAT_VERSION}): upgrade charstream to read it",
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("command", ["generate", "train"])
def test_a_bad_model_file_is_named_and_left_alone(tmp_path, model, name, command):
    data = _bad_model_files(tmp_path, model)[name]
    path = tmp_path / name
    path.write_bytes(data)
    args = ["generate", "--model", path, "--length", "5"] if command == "generate" else \
        ["train", "-", "--model", path]
    line = error_line(invoke(*args, input="some text to train on, which must not be used"))
    assert line.startswith(f"Error: {path}{EXPECTED[name]}"), line
    assert path.read_bytes() == data
    assert not (tmp_path / "pwned").exists()
    assert not (tmp_path / (name + ".lock")).exists()


def test_a_model_path_that_is_a_directory(tmp_path):
    (tmp_path / "d.npz").mkdir()
    for args in (["generate", "--model", tmp_path / "d.npz"], ["train", "-", "--model", tmp_path / "d.npz"]):
        assert error_line(invoke(*args, input="text")) == \
            f"Error: {tmp_path / 'd.npz'}: is a directory, not a model file"


def test_an_unreadable_model_file(tmp_path, model, monkeypatch):
    real_open = open

    def denying_open(file, *a, **k):   # as root chmod cannot deny reading; the error path is the same
        if os.fspath(file) == str(model):
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, *a, **k)

    monkeypatch.setattr(charstream.store, "open", denying_open, raising=False)
    assert error_line(invoke("generate", "--model", model)) == f"Error: {model}: permission denied"


# ---- sources ----

def test_a_missing_source_and_a_directory(tmp_path, model):
    before = model.read_bytes()
    assert error_line(invoke("train", tmp_path / "nope.txt", "--model", model)) == \
        f"Error: {tmp_path / 'nope.txt'}: no such file"
    assert error_line(invoke("train", tmp_path, "--model", model)) == \
        f"Error: {tmp_path}: is a directory, not a text file"
    assert model.read_bytes() == before


def test_an_unreadable_source(tmp_path, model, monkeypatch):
    src = tmp_path / "secret.txt"
    src.write_text("private words " * 20)
    src.chmod(0)
    if os.geteuid() == 0:   # root reads anything: make access() answer as it would for a user
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **k: False if os.fspath(p) == str(src)
                            else real_access(p, mode, **k))
    before = model.read_bytes()
    assert error_line(invoke("train", src, "--model", model)) == f"Error: {src}: permission denied"
    assert model.read_bytes() == before


def test_a_source_that_becomes_unreadable_after_the_check(tmp_path, model, monkeypatch):
    src = tmp_path / "racy.txt"
    src.write_text("words " * 20)
    import charstream.sources.files as files
    real_open = open

    def denying_open(file, *a, **k):
        if os.fspath(file) == str(src):
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, *a, **k)

    monkeypatch.setattr(files, "open", denying_open, raising=False)
    before = model.read_bytes()
    assert error_line(invoke("train", src, "--model", model)) == \
        f"Error: {src}: Permission denied; {model} keeps its last good save"
    assert model.read_bytes() == before


def test_an_empty_stream_changes_nothing(tmp_path, model):
    before = model.read_bytes()
    assert error_line(invoke("train", "-", "--model", model, input="")) == \
        "Error: no text to train on: - gave no characters; the model was not changed"
    assert model.read_bytes() == before
    new = tmp_path / "new.npz"
    assert "no text to train on" in error_line(invoke("train", "-", "--model", new, input=""))
    assert not new.exists()
    assert folder_files(tmp_path) == ["m.npz"]   # no lock file or temporary file left behind


def test_nul_bytes_at_the_start_mean_a_binary_file(tmp_path, model):
    before = model.read_bytes()
    src = tmp_path / "data.bin"
    src.write_bytes(b"hello\x00world" * 100)
    assert error_line(invoke("train", src, "--model", model)) == (
        f"Error: {src}: looks like a binary file (a NUL byte at byte 5); charstream trains on UTF-8 text; "
        f"{model} keeps its last good save")
    r = invoke("train", "-", "--model", model, input=np.random.default_rng(1).bytes(3000))
    assert "looks like a binary file" in error_line(r)
    assert model.read_bytes() == before


def test_text_in_another_encoding_is_refused(tmp_path, model):
    before = model.read_bytes()
    cyrillic = ("Съешь же ещё этих мягких французских булок, да выпей чаю. " * 20).encode("cp1251")
    line = error_line(invoke("train", "-", "--model", model, input=cyrillic))
    assert line.startswith("Error: <stdin>: does not look like UTF-8 text (") and "another encoding?" in line
    assert model.read_bytes() == before


def test_a_nul_after_the_first_8000_bytes_is_a_character(tmp_path):
    path = tmp_path / "n.npz"
    r = invoke("train", "-", "--model", path, "--hidden-size", "4",
               input=b"plain text " * 800 + b"\x00 and more text after it")
    assert r.exit_code == 0, r.stderr
    assert "\x00" in charstream.load(path).vocab


def test_stdin_that_is_closed(monkeypatch):
    """Python sets sys.stdin to None when descriptor 0 is closed (a real process: see test_processes)."""
    import sys
    monkeypatch.setattr(sys, "stdin", None)
    with pytest.raises(charstream.CharstreamError, match="^<stdin>: stdin is closed$"):
        charstream.sources.check_source("-")


# ---- options ----

@pytest.mark.parametrize("args, message", [
    (["generate", "--temperature", "-1"], "Invalid value for '--temperature': -1.0 is not in the range x>0."),
    (["generate", "--temperature", "warm"], "Invalid value for '--temperature': 'warm' is not a valid float"),
    (["generate", "--temperature", "nan"], "Invalid value for '--temperature': 'nan' is not a finite number."),
    (["generate", "--length", "-5"], "Invalid value for '--length': -5 is not in the range x>=0."),
    (["generate", "--length", "ten"], "Invalid value for '--length': 'ten' is not a valid integer"),
    (["generate", "--random-seed", "-1"], "Invalid value for '--random-seed': -1 is not in the range x>=0."),
    (["train", "-", "--hidden-size", "0"], "Invalid value for '--hidden-size': 0 is not in the range"),
    (["train", "-", "--hidden-size", "big"], "Invalid value for '--hidden-size': 'big' is not a valid integer"),
    (["train", "-", "--seq-length", "0"], "Invalid value for '--seq-length': 0 is not in the range"),
    (["train", "-", "--learning-rate", "0"], "Invalid value for '--learning-rate': 0.0 is not in the range x>0."),
    (["train", "-", "--learning-rate", "nan"], "Invalid value for '--learning-rate': 'nan' is not a finite number."),
    (["train", "-", "--checkpoint-every", "inf"],
     "Invalid value for '--checkpoint-every': 'inf' is not a finite number."),
    (["train", "-", "--checkpoint-every", "-1"], "Invalid value for '--checkpoint-every': -1.0 is not in the range"),
    (["train", "-", "--random-seed", "-1"], "Invalid value for '--random-seed': -1 is not in the range x>=0."),
    (["train", "-", "--bogus"], "No such option '--bogus'"),
    (["generate", "--bogus"], "No such option '--bogus'"),
    (["frobnicate"], "No such command 'frobnicate'."),
])
def test_bad_option_values_are_usage_errors(model, args, message):
    before = model.read_bytes()
    r = invoke(*args, "--model", model, input="text " * 20)
    assert r.exit_code == 2
    line = error_line(r)
    assert line.startswith("Error: " + message), line
    assert r.stderr.splitlines()[-1] == line   # click's usage hint first, the error last
    assert model.read_bytes() == before


def test_seed_characters_never_seen_are_skipped_with_one_warning(model):
    r = invoke("generate", "--model", model, "--seed", "To be ☃ or not", "--length", "20", "--random-seed", "2")
    assert r.exit_code == 0
    assert r.stderr == "Warning: the prompt has characters the model has never seen, skipped: '☃'\n"
    assert r.stdout.startswith("To be ☃ or not") and len(r.stdout) == len("To be ☃ or not") + 20


def test_no_memory_for_the_model(tmp_path, monkeypatch):

    def no_memory(*a, **k):
        raise MemoryError()

    monkeypatch.setattr(charstream.checkpoint, "Model", no_memory)
    assert error_line(invoke("train", "-", "--model", tmp_path / "big.npz", "--hidden-size", "90000",
                             input="text")) == "Error: not enough memory for a model of hidden size 90000"


# ---- saving ----

def test_a_model_folder_without_write_permission(tmp_path, shakespeare, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "m.npz"
    assert invoke("train", "-", "--model", path, "--hidden-size", "4", input=shakespeare[:500]).exit_code == 0
    before = path.read_bytes()
    folder.chmod(0o555)
    try:
        if os.geteuid() == 0:   # root writes anywhere: make access() answer as it would for a user
            real_access = os.access
            monkeypatch.setattr(os, "access", lambda p, mode, **k: False if os.fspath(p) == str(folder)
                                else real_access(p, mode, **k))
        for target in (path, folder / "new.npz"):
            assert error_line(invoke("train", "-", "--model", target, input=shakespeare[:500])) == \
                f"Error: {folder}: permission denied: the model could not be saved there"
    finally:
        folder.chmod(0o755)
    assert path.read_bytes() == before
    assert folder_files(folder) == ["m.npz"]


def test_the_lock_file_cannot_be_created(tmp_path, monkeypatch):
    import charstream.lock as lock
    real_open = os.open

    def denying(p, *a, **k):
        if os.fspath(p).endswith(".lock"):
            raise PermissionError(errno.EACCES, "Permission denied", p)
        return real_open(p, *a, **k)

    monkeypatch.setattr(lock.os, "open", denying)
    assert error_line(invoke("train", "-", "--model", tmp_path / "m.npz", input="text")) == \
        f"Error: {tmp_path}: permission denied: the model could not be saved there"


def _full_disk(monkeypatch):
    """np.savez in the model store writes a little, then finds the disk full."""
    def savez(f, **arrays):
        f.write(b"PK\x03\x04 half a model")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(charstream.store.np, "savez", savez)


def test_a_full_disk_keeps_the_old_model(tmp_path, model, shakespeare, monkeypatch):
    before = model.read_bytes()
    _full_disk(monkeypatch)
    assert error_line(invoke("train", "-", "--model", model, input=shakespeare[2000:4000])) == \
        f"Error: saving {model} failed: No space left on device; {model} keeps its last good save"
    assert model.read_bytes() == before
    assert folder_files(model.parent) == ["m.npz"]   # the half-written temporary file is gone
    new = tmp_path / "new.npz"
    assert error_line(invoke("train", "-", "--model", new, input=shakespeare[:2000])) == \
        f"Error: saving {new} failed: No space left on device; nothing was saved to {new}"
    assert not new.exists()


def test_a_failed_checkpoint_is_a_warning_and_training_goes_on(tmp_path, model, shakespeare, monkeypatch):
    calls = []
    real_save = charstream.Model.save

    def save(m, path):   # the first save (a checkpoint) finds the disk full, the final one works
        calls.append(m.state.chars_seen)
        if len(calls) == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(m, path)

    monkeypatch.setattr(charstream.Model, "save", save)
    r = invoke("train", "-", "--model", model, "--checkpoint-every", "1e-9", input=shakespeare[2000:4000])
    assert r.exit_code == 0, r.stderr
    assert f"Warning: checkpoint failed, training goes on and will retry: saving {model} failed: No space left on " \
           f"device; {model} keeps its last good save" in r.stderr
    assert charstream.load(model).state.chars_seen == 4000


def test_a_stale_temporary_file_from_a_killed_save_is_removed(tmp_path, model):
    stale = tmp_path / ".m.npz.charstream-abc123.tmp"
    stale.write_bytes(b"PK\x03\x04 torn")
    other = tmp_path / ".other.npz.charstream-xyz.tmp"   # another model's save in progress: not ours
    other.write_bytes(b"PK")
    assert invoke("train", "-", "--model", model, input="more text " * 10).exit_code == 0
    assert not stale.exists() and other.exists()


# ---- non-finite values ----

def test_a_diverging_model_stops_with_an_error_and_the_file_keeps_the_last_good_save(model, shakespeare):
    before = model.read_bytes()   # each Adagrad step moves weights by about 1e307: inf within a few chunks
    line = error_line(invoke("train", "-", "--model", model, "--learning-rate", "1e307",
                             input=shakespeare[2000:6000]))
    assert line.startswith("Error: the loss became ") and line.endswith(f"; {model} keeps its last good save")
    assert model.read_bytes() == before


def test_a_model_with_huge_weights_is_never_saved_over(tmp_path, shakespeare):
    m = charstream.Model("", hidden_size=4, seed=0)
    list(charstream.Trainer(m).train([shakespeare[:500]]))
    m.params["bh"][...] = 1e3          # h = tanh(...) = 1 everywhere
    m.params["Why"][...] = 1.7e308     # so every logit is 4 * 1.7e308 = inf
    path = tmp_path / "huge.npz"
    m.save(path)
    before = path.read_bytes()
    line = error_line(invoke("train", "-", "--model", path, input=shakespeare[500:1500]))
    assert line == (f"Error: the loss became nan at chunk {m.state.chunks + 1}: training stopped, the model was not "
                    f"updated; {path} keeps its last good save")
    assert path.read_bytes() == before


def test_a_non_finite_parameter_is_never_written(tmp_path, shakespeare, monkeypatch):
    """If an update made a parameter infinite while the loss stayed finite, the save refuses."""
    from charstream.trainer import Trainer
    real = Trainer.train

    def poisoned(self, texts):
        for record in real(self, texts):
            self.model.params["bh"][0] = np.inf
            yield record

    monkeypatch.setattr(Trainer, "train", poisoned)
    path = tmp_path / "p.npz"
    m = charstream.Model("", hidden_size=4, seed=0)
    m.save(path)
    before = path.read_bytes()
    assert error_line(invoke("train", "-", "--model", path, "--seq-length", "1000", input=shakespeare[:1500])) == \
        f"Error: refusing to save: bh has NaN or infinite values; {path} keeps its last good save"
    assert path.read_bytes() == before


# ---- one writer ----

def test_a_second_writer_is_refused_and_a_reader_is_not(tmp_path, model):
    before = model.read_bytes()
    with WriterLock(model):
        line = error_line(invoke("train", "-", "--model", model, input="text " * 20))
        assert line == (f"Error: {model} is being trained by another charstream process (pid {os.getpid()}); "
                        f"wait for it to end, or train another --model")
        assert invoke("generate", "--model", model, "--length", "10").exit_code == 0
    assert model.read_bytes() == before
    assert invoke("train", "-", "--model", model, input="text " * 20).exit_code == 0
    assert not (tmp_path / "m.npz.lock").exists()


def test_a_lock_file_left_by_a_dead_process_is_not_a_lock(tmp_path, model):
    (tmp_path / "m.npz.lock").write_text("999999\n")   # what a kill -9 leaves: the file, no lock
    assert invoke("train", "-", "--model", model, input="text " * 20).exit_code == 0
    assert not (tmp_path / "m.npz.lock").exists()



def test_a_save_keeps_the_files_permissions(tmp_path, model):
    assert model.stat().st_mode & 0o777 == 0o666 & ~_umask()
    model.chmod(0o640)
    assert invoke("train", "-", "--model", model, input="more text " * 10).exit_code == 0
    assert model.stat().st_mode & 0o777 == 0o640


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_more_mistakes(tmp_path, model):
    before = model.read_bytes()
    (tmp_path / "file").write_text("x")
    assert error_line(invoke("train", "-", "--model", tmp_path / "file" / "m.npz", input="text")) == \
        f"Error: {tmp_path / 'file'}: not a directory: the model could not be saved there"
    assert error_line(invoke("train", "-", "--model", "", input="text")) == \
        "Error: Invalid value for --model: the path is empty"
    assert error_line(invoke("generate", "--model", model, "--temperature", "1e-320")) == \
        "Error: Invalid value for '--temperature': 1e-320 is too small (its inverse overflows)."
    assert model.read_bytes() == before


def test_a_model_reached_through_a_symlink_stays_a_symlink(tmp_path, model):
    link = tmp_path / "link.npz"
    link.symlink_to(model)
    assert invoke("train", "-", "--model", link, input="more text " * 10).exit_code == 0
    assert link.is_symlink() and charstream.load(model).state.chars_seen == 2100
    with WriterLock(model):   # one lock, whichever name the model is trained by
        assert "is being trained by another" in error_line(invoke("train", "-", "--model", link, input="text"))


@pytest.mark.parametrize("sig, code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_in_the_middle_of_a_save_waits_for_it(tmp_path, shakespeare, monkeypatch, sig, code):
    import signal
    real_savez = np.savez
    calls = []

    def savez(f, **arrays):   # the signal arrives halfway through writing the file
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), getattr(signal, sig))
            for _ in range(10_000):
                pass
        real_savez(f, **arrays)

    monkeypatch.setattr(charstream.store.np, "savez", savez)
    path = tmp_path / "s.npz"
    r = invoke("train", "-", "--model", path, "--hidden-size", "4", "--checkpoint-every", "1e-9",
               input=shakespeare[:3000])
    assert r.exit_code == code, r.stderr
    assert r.stderr.splitlines()[-1] == f"interrupted: saved model to {path}"
    assert "Traceback" not in r.stderr
    assert len(calls) == 1   # the save the signal came into was finished, not cut short and redone
    m = charstream.load(path)
    assert m.state.chunks >= 1


def test_an_entry_far_larger_than_its_model_is_not_read(tmp_path, model):
    with np.load(model) as z:
        arrays = dict(z)
    path = tmp_path / "bloated.npz"
    with open(path, "wb") as f:
        np.savez(f, **dict(arrays, Whh=np.zeros((1000, 1000))))
    assert error_line(invoke("generate", "--model", path)) == \
        f"Error: {path}: corrupt model file (Whh must be (8, 8), got (1000, 1000))"
    with open(path, "wb") as f:
        np.savez(f, **dict(arrays, junk=np.zeros(10)))
    assert error_line(invoke("generate", "--model", path)) == \
        f"Error: {path}: corrupt model file (unexpected entry 'junk.npy')"
