"""`charstream.train`: the command's run as one call (the same file to the bit), its options and
errors, and progress that never goes quiet and says how far."""
import io
import os
import queue
import subprocess
import threading

import pytest

import charstream
from charstream.cli.show import Printer, duration, line
from charstream.progress import Extent
from helpers import TIMEOUT, assert_same_file, cli, invoke, popen, stop

RUNS = [  # (cell, layers, options): every kind of option the command takes, as both spell it
    ("rnn", 1, dict(hidden_size=16, random_seed=3, seq_length=20, passes=2, max_chars=5000, anneal=0.5,
                    reset_every=300, learning_rate=0.05)),
    ("lstm", 2, dict(hidden_size=8, random_seed=4, passes=3, max_vocab=40, vocab="abc")),
    ("gru", 1, dict(hidden_size=8, random_seed=5, fixed_vocab=False, max_chars=2000)),
]


def _cli_args(options):
    args = []
    for k, v in options.items():
        flag = "--vocab" if k == "vocab" else "--" + k.replace("_", "-")
        if isinstance(v, bool):
            args.append(flag if v else "--open-vocab")
        else:
            args += [flag, str(v)]
    return args


@pytest.mark.parametrize("cell,layers,options", RUNS)
def test_the_command_and_the_library_write_the_same_file(tmp_path, shakespeare, cell, layers, options):
    text = tmp_path / "a.txt"
    text.write_text(shakespeare[:3000], encoding="utf-8")
    by_cli, by_lib = tmp_path / "cli.npz", tmp_path / "lib.npz"
    r = invoke("train", text, "--model", by_cli, "--cell", cell, "--layers", layers, *_cli_args(options),
               "--report-every", 0, "--sample-every", 0)
    assert r.exit_code == 0, r.output
    summary = charstream.train([str(text)], model=by_lib, cell=cell, layers=layers, **options)
    assert_same_file(by_cli, by_lib)
    assert summary.created and summary.path == str(by_lib) and summary.saves == 1
    assert summary.chunks == charstream.load(by_lib).state.chunks > 0
    assert summary.stopped == ("max_chars" if "max_chars" in options else "end")
    # and a resumed run, from a stream
    more = shakespeare[3000:4500]
    assert invoke("train", "-", "--model", by_cli, "--report-every", 0, input=more).exit_code == 0
    again = charstream.train([[more]], model=by_lib)
    assert not again.created and again.chars_seen == len(more)
    assert_same_file(by_cli, by_lib)


def test_a_model_object_trains_in_memory_as_the_file_would(tmp_path, shakespeare):
    path = tmp_path / "m.npz"
    charstream.train([[shakespeare[:2000]]], model=path, hidden_size=8, random_seed=1)
    m = charstream.Model("", hidden_size=8, random_seed=1)
    summary = charstream.train([[shakespeare[:2000]]], model=m)
    assert summary.path is None and summary.saves == 0 and summary.model is m
    m.save(tmp_path / "mem.npz")
    assert_same_file(tmp_path / "mem.npz", path)
    with pytest.raises(charstream.CharstreamError, match="hidden_size only shapes a new model"):
        charstream.train([["x"]], model=m, hidden_size=9)


def test_an_unknown_option_is_a_type_error_naming_it(tmp_path):
    with pytest.raises(TypeError, match=r"train\(\) got an unexpected keyword argument 'hidden'"):
        charstream.train(["-"], model=tmp_path / "m.npz", hidden=8)
    with pytest.raises(charstream.CharstreamError, match="passes must be a whole number >= 1, got 0"):
        charstream.train([["abc"]], model=tmp_path / "m.npz", passes=0)
    assert not (tmp_path / "m.npz").exists()


def test_a_log_in_a_missing_folder_is_a_clear_error_before_anything_trains(tmp_path, shakespeare):
    log = tmp_path / "nowhere" / "loss.csv"
    message = f"{log}: cannot open the log: there is no folder {tmp_path / 'nowhere'}"
    with pytest.raises(charstream.CharstreamError) as e:
        charstream.train([[shakespeare[:500]]], model=tmp_path / "m.npz", log=str(log))
    assert str(e.value) == message
    r = invoke("train", "-", "--model", tmp_path / "m.npz", "--log", log, input=shakespeare[:500])
    assert r.exit_code == 1 and r.stderr.splitlines()[-1] == f"Error: {message}"
    assert not (tmp_path / "m.npz").exists()


def test_reports_say_how_far_through_a_file(tmp_path, shakespeare):
    text = tmp_path / "a.txt"
    text.write_text(shakespeare[:2000] + "ÆØÅ ü → ∑" * 50, encoding="utf-8")   # bytes per character > 1
    reports = []
    charstream.train([str(text)], model=tmp_path / "m.npz", hidden_size=8, passes=2, report_every=0,
                     progress=reports.append)
    assert len(reports) == charstream.load(tmp_path / "m.npz").state.chunks
    fractions = [r.fraction for r in reports]
    assert all(0 < f <= 1 for f in fractions) and fractions == sorted(fractions)
    assert fractions[-1] > 0.98 and fractions[len(fractions) // 2] == pytest.approx(0.5, abs=0.02)
    assert all(r.eta_s is not None and r.eta_s >= 0 for r in reports) and not any(r.idle for r in reports)
    assert reports[-1].eta_s < reports[0].eta_s


def test_no_progress_callback_no_reports_and_streams_have_no_fraction(tmp_path, shakespeare):
    reports = []
    charstream.train([[shakespeare[:1000]]], model=tmp_path / "m.npz", report_every=0, progress=reports.append)
    assert reports and all(r.fraction is None and r.eta_s is None for r in reports)
    assert charstream.train([[shakespeare[:1000]]], model=tmp_path / "m.npz", progress=None).report is not None


def test_extent_estimates_against_each_budget():
    assert Extent(max_seconds=10).estimate(2.5, 0) == (0.25, 7.5)
    assert Extent(max_chars=1000).estimate(4.0, 250) == (0.25, 12.0)
    e = Extent(total_bytes=3000)
    assert e.estimate(1.0, 0) == (None, None) or e.estimate(1.0, 0)[0] is None
    list(e.counted(["ab", "é" * 10]))   # 12 characters in 22 bytes: the file holds 3000 * 12 / 22
    f, eta = e.estimate(2.0, 818)
    assert f == pytest.approx(818 / (3000 * 12 / 22)) and eta == pytest.approx(2.0 * (1 - f) / f)
    f, eta = Extent(max_seconds=100, max_chars=1000).estimate(10.0, 500)   # the furthest along, the soonest end
    assert f == 0.5 and eta == 10.0
    assert Extent().estimate(1.0, 10) == (None, None)


def test_a_quiet_stream_reports_what_trained_then(tmp_path, shakespeare):
    """Text, then a stream that stays open and quiet: the report comes while it is quiet (not at
    the end), and says everything that trained."""
    quiet_report, released = queue.Queue(), threading.Event()

    def source():
        yield shakespeare[:5000]
        released.wait(TIMEOUT)   # quiet until the idle report came
        yield shakespeare[5000:6000]

    def progress(report):
        if report.idle:
            quiet_report.put(report)
            released.set()

    summary = charstream.train([source()], model=tmp_path / "m.npz", hidden_size=8, report_every=1000,
                               progress=progress)
    idle = quiet_report.get(timeout=0)
    assert released.is_set() and idle.chars_trained == 4975 and idle.chunks == 199
    assert summary.report.chars_trained == 5975 and not summary.report.idle


def test_the_command_reports_a_burst_while_the_pipe_stays_open(tmp_path, shakespeare):
    """`head -c N corpus | (cat; sleep 30) | charstream train -`: the report of the burst comes while
    the pipe is still open."""
    proc = popen(cli("train", "-", "--model", tmp_path / "m.npz", "--hidden-size", "8", "--sample-every", "0",
                     "--report-every", "1000"),   # no timed report: only the quiet pipe can bring one
                 stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        proc.stdin.write(shakespeare[:20000].encode())
        proc.stdin.flush()
        lines = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in iter(proc.stderr.readline, b"")], daemon=True).start()
        first = lines.get(timeout=TIMEOUT)   # the pipe is open: only the idle report can say this
        assert first.startswith(b"chars 19,975  chunks 799 "), first
        assert proc.poll() is None
        proc.stdin.close()
        assert proc.wait(timeout=TIMEOUT) == 0
    finally:
        stop(proc)


def test_plain_lines_say_how_far_on_a_pipe(tmp_path, shakespeare):
    (tmp_path / "a.txt").write_text(shakespeare[:2000], encoding="utf-8")
    r = invoke("train", tmp_path / "a.txt", "--model", tmp_path / "m.npz", "--hidden-size", 8,
               "--report-every", 0, "--sample-every", 0)
    lines = [x for x in r.stderr.splitlines() if x.startswith("chars ")]
    assert len(lines) == 79 and "\r" not in r.stderr
    assert lines[0].endswith(" left") and "1% done, " in lines[0] and "99% done, 0:00 left" in lines[-1]


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_terminal_gets_a_progress_bar_when_the_length_is_known(tmp_path, shakespeare):
    reports = []
    charstream.train([[shakespeare[:2000]]], model=tmp_path / "m.npz", hidden_size=8, max_chars=2000,
                     report_every=0, progress=reports.append)
    out = _Terminal()
    printer = Printer(stream=out, sample_every=0)
    printer(reports[len(reports) // 2])
    printer(reports[-1])
    printer.close_line()
    text = out.getvalue()
    assert "\r" in text and text.endswith("\x1b[?25h\n") and "[##########----------]   50%" in text
    assert "[###################-]   98%" in text and " left  chars 1,975 " in text
    stream = _Terminal()   # a stream of unknown length: a status line rewritten in place
    unknown = []
    charstream.train([[shakespeare[:200]]], model=tmp_path / "u.npz", report_every=0, progress=unknown.append)
    Printer(stream=stream, sample_every=0)(unknown[-1])
    assert stream.getvalue() == "\r\x1b[K" + line(unknown[-1]) and "done" not in stream.getvalue()


def test_durations():
    assert [duration(s) for s in (0, 59.4, 61, 3600, 3725)] == ["0:00", "0:59", "1:01", "1:00:00", "1:02:05"]


def test_import_never_exits_the_process(tmp_path):
    """Even with a bad kernel path and `charstream` in its arguments, a program that imports the
    package gets an ImportError it can catch."""
    code = "try:\n import charstream\nexcept ImportError as e:\n print('caught:', e)\n"
    (tmp_path / "prog.py").write_text(code)
    r = subprocess.run([os.sys.executable, str(tmp_path / "prog.py"), "charstream", "train"], cwd=tmp_path,
                       env=dict(os.environ, CHARSTREAM_ISA="avx3"), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("caught: CHARSTREAM_ISA=avx3: unknown kernel path"), r


def test_every_option_of_the_command_is_an_option_of_train_by_the_same_name():
    """Adding an option is one click option and one Options field: the command passes the rest on."""
    from dataclasses import fields
    from charstream.cli.train import train as command
    own = {"sources", "model_path", "listen", "sample_every",   # the command's: where, TCP, the terminal
           "no_validation"}                                    # validate=False
    assert {p.name for p in command.params} - own == {f.name for f in fields(charstream.Options)}
    for p in command.params:
        if p.name not in own and p.name != "fixed_vocab":
            assert p.opts[0] == "--" + p.name.replace("_", "-")
