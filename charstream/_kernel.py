"""The compiled kernel for this CPU: the fastest of charstream._rnn_step_{avx512,avx2,baseline} it can run.

Each path is ext/_rnn_step.pyx built for one instruction-set level (setup.py); `charstream._cpu` asks
the CPU which it can execute, and only that module is imported, so a wheel built anywhere never
runs an instruction this CPU lacks. `CHARSTREAM_ISA=baseline|avx2|avx512` forces a path (to test a
lower one); a path this CPU cannot run, or one this install was built without, is an ImportError
that says so. docs/build.md has the flags and how to check which path runs.
"""
import importlib
import importlib.util
import os
from typing import TYPE_CHECKING

from . import _cpu

PATHS = ("avx512", "avx2", "baseline")   # fastest first
ENV = "CHARSTREAM_ISA"


def _built():
    """The paths compiled into this install, fastest first (found on disk, not imported)."""
    return [p for p in PATHS if importlib.util.find_spec(f"{__package__}._rnn_step_{p}") is not None]


def choose(wanted, built, runnable):
    """The path to load: `wanted` (CHARSTREAM_ISA) when set, else the fastest both built and runnable.

    Raises ImportError with a one-line reason when `wanted` is unknown, not built or not runnable here.
    """
    usable = [p for p in built if p in runnable]
    if not wanted:
        if not usable:
            raise ImportError("charstream's compiled kernel is missing: reinstall charstream (pip install .)")
        return usable[0]
    if wanted not in PATHS:
        raise ImportError(f"{ENV}={wanted}: unknown kernel path; use one of {', '.join(PATHS)}, or leave it unset")
    if wanted not in runnable:
        raise ImportError(f"{ENV}={wanted}: this CPU cannot run that kernel path (it runs {', '.join(usable)})")
    if wanted not in built:
        raise ImportError(f"{ENV}={wanted}: this install was built without that kernel path "
                          f"(it has {', '.join(built)}; see docs/build.md)")
    return wanted


def module(path):
    """The kernel module of one path in AVAILABLE (tests load each); any other path is refused, unloaded."""
    if path not in AVAILABLE:
        raise ImportError(f"kernel path {path!r} cannot run here (available: {', '.join(AVAILABLE)})")
    return importlib.import_module(f"{__package__}._rnn_step_{path}")


_runnable = _cpu.supported()
BUILT = _built()                                      # compiled into this install
AVAILABLE = [p for p in BUILT if p in _runnable]      # built and runnable on this CPU, fastest first
ISA = choose(os.environ.get(ENV, "").strip().lower(), BUILT, _runnable)   # the path in use

if TYPE_CHECKING:
    from ._rnn_step import CellKernel, Kernel, LaneKernel, openmp   # the stub, charstream/_rnn_step.pyi
else:
    Kernel = module(ISA).Kernel
    CellKernel = module(ISA).CellKernel
    LaneKernel = module(ISA).LaneKernel
    openmp = module(ISA).openmp
