"""The kernel's instruction-set paths: which one loads, CHARSTREAM_ISA, each against the oracle, the stub."""
import ast
import importlib.util
import inspect
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import charstream
import oracle
from charstream import _cpu, _kernel

PY = [sys.executable, "-c"]
SHOW = "import charstream._kernel as k; print(k.ISA, k.Kernel.__module__)"


def _run(code, isa=None, *args):
    env = {k: v for k, v in os.environ.items() if k != "CHARSTREAM_ISA"}
    if isa is not None:
        env["CHARSTREAM_ISA"] = isa
    # from tests/: `python -c` puts its working directory first on sys.path, and the source folder has
    # no compiled modules when the package is installed (not editable)
    return subprocess.run([*PY, code, *args], env=env, capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).parent)


def test_the_default_is_the_fastest_path_this_cpu_runs():
    r = _run(SHOW)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [_kernel.AVAILABLE[0], f"charstream._rnn_step_{_kernel.AVAILABLE[0]}"]
    assert "baseline" in _kernel.AVAILABLE


@pytest.mark.parametrize("isa", _kernel.AVAILABLE)
def test_a_forced_path_is_the_one_loaded_and_reported(isa):
    r = _run(SHOW + "; import sys; print(sorted(m for m in sys.modules if '_rnn_step' in m))", isa)
    assert r.returncode == 0, r.stderr
    first, loaded = r.stdout.splitlines()
    assert first.split() == [isa, f"charstream._rnn_step_{isa}"]
    assert loaded == str([f"charstream._rnn_step_{isa}"])   # no other path was imported
    r = _run("from charstream.cli import main; main()", isa, "--version")
    threads = "threads: OpenMP" if _kernel.openmp() else "threads: 1, built without OpenMP"
    assert r.stdout == f"charstream {charstream.__version__} (kernel: {isa}, {threads})\n"


def test_info_json_names_the_path(tmp_path, shakespeare):
    import json

    from click.testing import CliRunner

    from charstream.cli import main
    model = tmp_path / "m.npz"
    runner = CliRunner()
    assert runner.invoke(main, ["train", "-", "--model", str(model)], input=shakespeare[:500]).exit_code == 0
    r = runner.invoke(main, ["info", "--model", str(model), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["kernel_isa"] == _kernel.ISA


def test_an_unknown_path_is_a_one_line_import_error():
    r = _run("import charstream", "avx3")
    assert r.returncode == 1
    assert r.stderr.splitlines()[-1] == ("ImportError: CHARSTREAM_ISA=avx3: unknown kernel path; use one of "
                                         "avx512, avx2, baseline, or leave it unset")


def test_the_command_says_an_unknown_path_in_one_line_without_a_traceback(tmp_path):
    env = dict(os.environ, CHARSTREAM_ISA="avx3")
    r = subprocess.run([sys.executable, "-m", "charstream", "--version"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == ("Error: CHARSTREAM_ISA=avx3: unknown kernel path; use one of avx512, avx2, baseline, "
                        "or leave it unset\n")


@pytest.mark.parametrize("wanted,built,runnable,expect", [
    ("", ["avx512", "avx2", "baseline"], ["avx512", "avx2", "baseline"], "avx512"),
    ("", ["avx512", "avx2", "baseline"], ["avx2", "baseline"], "avx2"),
    ("", ["avx512", "avx2", "baseline"], ["baseline"], "baseline"),
    ("", ["baseline"], ["avx512", "avx2", "baseline"], "baseline"),      # CHARSTREAM_PORTABLE=1
    ("avx2", ["avx512", "avx2", "baseline"], ["avx512", "avx2", "baseline"], "avx2"),
    ("baseline", ["avx512", "avx2", "baseline"], ["avx2", "baseline"], "baseline"),
    ("avx512", ["avx512", "avx2", "baseline"], ["avx2", "baseline"],
     "CHARSTREAM_ISA=avx512: this CPU cannot run that kernel path (it runs avx2, baseline)"),
    ("avx512", ["baseline"], ["baseline"],                                 # aarch64
     "CHARSTREAM_ISA=avx512: this CPU cannot run that kernel path (it runs baseline)"),
    ("avx2", ["baseline"], ["avx512", "avx2", "baseline"],
     "CHARSTREAM_ISA=avx2: this install was built without that kernel path (it has baseline; see docs/build.md)"),
    ("sse", ["baseline"], ["baseline"],
     "CHARSTREAM_ISA=sse: unknown kernel path; use one of avx512, avx2, baseline, or leave it unset"),
    ("", [], ["baseline"], "charstream's compiled kernel is missing: reinstall charstream (pip install .)"),
])
def test_choose(wanted, built, runnable, expect):
    if expect in _kernel.PATHS:
        assert _kernel.choose(wanted, built, runnable) == expect
    else:
        with pytest.raises(ImportError) as e:
            _kernel.choose(wanted, built, runnable)
        assert str(e.value) == expect


def test_a_path_that_cannot_run_is_never_imported():
    with pytest.raises(ImportError, match="kernel path 'avx3' cannot run here"):
        _kernel.module("avx3")


def _cpuinfo_flags():
    text = Path("/proc/cpuinfo").read_text()
    return set(next(line for line in text.splitlines() if line.startswith("flags")).split(":")[1].split())


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64") or not Path("/proc/cpuinfo").exists(),
                    reason="/proc/cpuinfo's x86 flags are the oracle")
def test_the_cpu_probe_agrees_with_the_kernels_flags():
    flags = _cpuinfo_flags()
    v3 = {"avx", "avx2", "fma", "bmi1", "bmi2", "f16c", "abm", "movbe", "sse4_2", "ssse3", "popcnt", "cx16"}
    v4 = v3 | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}
    expect = (["avx512"] if v4 <= flags else []) + (["avx2"] if v3 <= flags else []) + ["baseline"]
    assert _cpu.supported() == expect


def test_every_path_the_platform_has_is_built():
    """x86-64 with gcc or clang: all three (unless built with CHARSTREAM_PORTABLE=1: set it for the
    tests too); elsewhere the baseline alone, and the probe says so."""
    if platform.machine() == "x86_64" and sys.platform != "win32" and not os.environ.get("CHARSTREAM_PORTABLE"):
        assert _kernel.BUILT == list(_kernel.PATHS)
    elif platform.machine() not in ("x86_64", "AMD64"):
        assert _cpu.supported() == _kernel.BUILT == ["baseline"]
    assert "baseline" in _kernel.BUILT


@pytest.mark.skipif(platform.machine() != "x86_64" or shutil.which("objdump") is None,
                    reason="needs x86-64 and objdump")
@pytest.mark.parametrize("isa", _kernel.BUILT)
def test_each_path_uses_only_its_own_registers(isa):
    so = importlib.util.find_spec(f"charstream._rnn_step_{isa}").origin   # found, not imported
    asm = subprocess.run(["objdump", "-d", so], capture_output=True, text=True, check=True).stdout
    ymm, zmm = asm.count("%ymm"), asm.count("%zmm")
    if isa == "baseline":
        assert ymm == zmm == 0
    elif isa == "avx2":
        assert ymm > 100 and zmm == 0
    else:
        assert zmm > 100


def _random_params(rng, H, V):
    return {"Wxh": rng.standard_normal((H, V)) * 0.3, "Whh": rng.standard_normal((H, H)) * (0.6 / np.sqrt(H)),
            "Why": rng.standard_normal((V, H)) * 0.3, "bh": rng.standard_normal(H) * 0.1,
            "by": rng.standard_normal(V) * 0.1}


@pytest.mark.parametrize("isa", _kernel.AVAILABLE)
@pytest.mark.parametrize("H,V", [(5, 3), (37, 61), (100, 65)])
def test_each_path_trains_evaluates_and_samples_as_the_oracle_does(isa, H, V):
    Kernel = _kernel.module(isa).Kernel
    rng = np.random.default_rng(H + V)
    params = _random_params(rng, H, V)
    xs = rng.integers(0, V, 4 * 25 + 1).astype(np.int32)
    # one chunk's loss and gradients
    h0 = np.tanh(rng.standard_normal(H))
    k, h = Kernel({n: p.copy() for n, p in params.items()}, {n: np.zeros_like(p) for n, p in params.items()}, 25), h0.copy()
    oloss, ograds, oh = oracle.loss_fun(params, xs[:25], xs[1:26], h0)
    assert k.loss_and_grads(xs[:26], h) == pytest.approx(oloss, rel=1e-12)
    for n, g in ograds.items():
        np.testing.assert_allclose(k.grads[n], g, rtol=1e-10, atol=1e-10 * np.abs(g).max())
    np.testing.assert_allclose(h, oh, rtol=1e-12, atol=1e-14)
    # four chunks of training
    p, mem = {n: v.copy() for n, v in params.items()}, {n: np.zeros_like(v) for n, v in params.items()}
    k, h = Kernel(p, mem, 25), np.zeros(H)
    losses = [k.train_chunk(xs, s, h, 0.1) for s in range(0, 100, 25)]
    op, omem = {n: v.copy() for n, v in params.items()}, {n: np.zeros_like(v) for n, v in params.items()}
    olosses, oh = oracle.train(op, omem, list(xs))
    np.testing.assert_allclose(losses, olosses, rtol=1e-10)
    for n in p:
        np.testing.assert_allclose(p[n], op[n], rtol=1e-8, atol=1e-9 * np.abs(op[n]).max())
    np.testing.assert_allclose(h, oh, rtol=1e-8, atol=1e-10)
    # evaluate: the oracle's loss without the update
    h = h0.copy()
    assert Kernel(params).evaluate(xs, h) == pytest.approx(oracle.loss_fun(params, xs[:-1], xs[1:], h0)[0], rel=1e-11)
    # sample: the inverse CDF of the oracle's softmax at each u, stepping h through each draw
    u, out, h = rng.random(300), np.empty(300, np.int32), h0.copy()
    Kernel(params).sample(h, u, out, 0.8)
    oh, expect = h0.copy(), []
    for n in range(300):
        y = (params["Why"] @ oh + params["by"]) / 0.8
        w = np.exp(y - y.max())
        expect.append(int(np.searchsorted(np.cumsum(w), u[n] * w.sum(), side="right")))
        oh = np.tanh(params["Wxh"][:, expect[-1]] + params["Whh"] @ oh + params["bh"])
    assert out.tolist() == expect
    np.testing.assert_allclose(h, oh, rtol=1e-9, atol=1e-12)


def _stub_kernel(name):
    """{name: (kind, [(parameter, has_default)])} of class `name` in charstream/_rnn_step.pyi."""
    tree = ast.parse((Path(charstream.__file__).parent / "_rnn_step.pyi").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name)
    out = {}
    for node in cls.body:
        if isinstance(node, ast.AnnAssign):
            out[node.target.id] = ("attribute", None)
        elif isinstance(node, ast.FunctionDef):
            if any(isinstance(d, ast.Name) and d.id == "property" for d in node.decorator_list):
                out[node.name] = ("attribute", None)
                continue
            args = node.args.args
            defaults = [False] * (len(args) - len(node.args.defaults)) + [True] * len(node.args.defaults)
            out[node.name] = ("method", [(a.arg, d) for a, d in zip(args, defaults)])
    return out


@pytest.mark.parametrize("cls", ["Kernel", "CellKernel"])
@pytest.mark.parametrize("isa", _kernel.AVAILABLE)
def test_the_stub_matches_the_extension(isa, cls):
    Kernel = getattr(_kernel.module(isa), cls)
    stub = _stub_kernel(cls)
    compiled = {}
    for name in dir(Kernel):
        if name.startswith("_"):
            continue
        attr = inspect.getattr_static(Kernel, name)
        if callable(attr):
            params = inspect.signature(getattr(Kernel, name)).parameters.values()
            compiled[name] = ("method", [(p.name, p.default is not p.empty) for p in params])
        else:
            compiled[name] = ("attribute", None)
    # __init__ has no signature object: embedsignature puts it atop the class docstring
    first = Kernel.__doc__.splitlines()[0]
    assert first.startswith(cls + "(") and first.endswith(")")
    init = [(a.strip().split()[-1].split("=")[0], "=" in a) for a in first[len(cls + "("):-1].split(",")]
    compiled["__init__"] = ("method", [("self", False)] + init)
    assert stub == compiled
