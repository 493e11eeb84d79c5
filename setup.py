"""Build the one compiled kernel, charstream._rnn_step; all metadata lives in pyproject.toml."""
import os
import sys

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

# CHARSTREAM_PORTABLE=1 builds for any x86-64 (or aarch64) CPU instead of this machine's.
# CHARSTREAM_DEBUG=1 turns bounds checking back on and drops optimisation.
portable = os.environ.get("CHARSTREAM_PORTABLE", "") not in ("", "0")
debug = os.environ.get("CHARSTREAM_DEBUG", "") not in ("", "0")

if sys.platform == "win32":
    cflags = ["/O2", "/fp:fast"]
elif debug:
    cflags = ["-O0", "-g"]
else:
    # -ffast-math on compile only (never on link: crtfastmath would set flush-to-zero for the whole
    # process). It lets gcc vectorise the dot-product reductions and call libmvec's tanh/exp.
    # gcc vectorises for 256-bit registers even where the CPU has 512-bit ones; asking for 512 made
    # training and sampling 9% faster on an AVX-512 Xeon (benchmarks/ab.py). Without AVX-512 it
    # changes nothing.
    cflags = ["-O3", "-ffast-math"] + ([] if portable else ["-march=native", "-mprefer-vector-width=512"])

extension = Extension(
    "charstream._rnn_step",
    ["ext/_rnn_step.pyx"],
    depends=["ext/kernels.h", "ext/cells.h", "ext/cells.pxi"],
    include_dirs=["ext", np.get_include()],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    extra_compile_args=cflags,
    libraries=[] if sys.platform == "win32" else ["m"],
)

setup(
    ext_modules=cythonize(
        [extension],
        compiler_directives={
            "language_level": 3,
            "boundscheck": debug,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": debug,
            "embedsignature": True,
        },
    )
)
