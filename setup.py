"""Build the kernel once per instruction-set path, plus the CPU probe; all metadata lives in pyproject.toml.

charstream._rnn_step_{avx512,avx2,baseline} are ext/_rnn_step.pyx compiled for x86-64-v4, x86-64-v3 and
any x86-64; charstream/_kernel.py loads the fastest this CPU runs (docs/build.md). Each path's flags are
tried on the compiler first: a path it refuses (every x86 one on aarch64) is not built, and the
baseline then gets the compiler's defaults.
"""
import glob
import os
import sys
import tempfile

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CompileError

# CHARSTREAM_PORTABLE=1 builds the baseline path only (one module, a third of the build time).
# CHARSTREAM_DEBUG=1 turns bounds checking back on and drops optimisation, on every path.
# CHARSTREAM_NO_OPENMP=1 builds without OpenMP (one thread), as a compiler without it would.
portable = os.environ.get("CHARSTREAM_PORTABLE", "") not in ("", "0")
debug = os.environ.get("CHARSTREAM_DEBUG", "") not in ("", "0")

# x86-64-v3 spelt out, for compilers older than the level names (gcc < 11, clang < 12)
X86_V3 = ["-mavx", "-mavx2", "-mfma", "-mbmi", "-mbmi2", "-mf16c", "-mlzcnt", "-mmovbe", "-mpopcnt",
          "-msse4.2", "-mssse3", "-mcx16"]
X86_V4 = X86_V3 + ["-mavx512f", "-mavx512bw", "-mavx512cd", "-mavx512dq", "-mavx512vl"]
# path: (the flag sets to try, first accepted wins; flags added where the compiler knows them)
PATHS = {
    # gcc vectorises for 256-bit registers even where the CPU has 512-bit ones; asking for 512 made
    # training and sampling 9% faster on an AVX-512 Xeon (benchmarks/ab.py).
    "avx512": ([["-march=x86-64-v4"], X86_V4], ["-mprefer-vector-width=512"]),
    "avx2": ([["-march=x86-64-v3"], X86_V3], []),
    # -march=x86-64 overrides a -march=native in Python's own CFLAGS; [] is the fallback off x86
    "baseline": ([["-march=x86-64"], []], []),
}

if sys.platform == "win32":
    cflags = ["/O2", "/fp:fast"]
elif debug:
    cflags = ["-O0", "-g"]
else:
    # -ffast-math on compile only (never on link: crtfastmath would set flush-to-zero for the whole
    # process). It lets gcc vectorise the dot-product reductions, and the loops over exp, expm1 and
    # log into calls to glibc's libmvec; the avx512 path has its own exp and tanh (ext/kernels.h).
    cflags = ["-O3", "-ffast-math"]

# the kernel's own source, its .pxi parts and the C headers: a change to any rebuilds every path
depends = sorted({"ext/_rnn_step.pyx", *glob.glob("ext/*.pxi"), *glob.glob("ext/*.h")})


def kernel(path):
    return Extension(f"charstream._rnn_step_{path}", [f"ext/_rnn_step_{path}.pyx"], depends=depends,
                     include_dirs=["ext"], extra_compile_args=list(cflags),
                     libraries=[] if sys.platform == "win32" else ["m"])


class build_paths(build_ext):
    """build_ext that adds each path's flags, probed on the compiler, and drops the paths it refuses."""

    def build_extensions(self):
        if self.compiler.compiler_type == "msvc":   # no dispatch with MSVC: the baseline alone
            self.extensions = [e for e in self.extensions if not e.name.endswith(("_avx512", "_avx2"))]
            return super().build_extensions()
        strict = self._compiles([], strict=True)    # -Werror, unless the default flags already warn
        # OpenMP for LaneKernel's threads where the compiler has it (gcc's libgomp, clang with libomp);
        # without it (Apple's clang) the kernel builds and runs on one thread (`charstream --version`).
        openmp = [] if os.environ.get("CHARSTREAM_NO_OPENMP", "") not in ("", "0") else \
            next((f for f in (["-fopenmp"],) if self._links_openmp(f)), [])
        if not openmp:
            print("charstream: no OpenMP: the kernel will run on one thread", file=sys.stderr)
        kept = []
        for ext in self.extensions:
            path = ext.name.rsplit("_", 1)[1] if ext.name.startswith("charstream._rnn_step_") else "baseline"
            choices, optional = PATHS[path]
            flags = next((f for f in choices if self._compiles(f, strict)), None)
            if flags is None:
                print(f"charstream: the compiler refuses {' '.join(choices[0])}: no {path} path", file=sys.stderr)
                continue
            flags += [f for f in optional if self._compiles(flags + [f], strict)]
            ext.extra_compile_args = ext.extra_compile_args + flags
            if ext.name.startswith("charstream._rnn_step_"):
                ext.extra_compile_args += openmp
                ext.extra_link_args = list(ext.extra_link_args) + openmp
            kept.append(ext)
        self.extensions = kept
        super().build_extensions()

    def _links_openmp(self, flags):
        """Whether a program using omp_get_max_threads compiles and links with these flags."""
        with tempfile.TemporaryDirectory() as d:
            src = os.path.join(d, "omp.c")
            with open(src, "w") as f:
                f.write("#include <omp.h>\nint main(void) { return omp_get_max_threads() < 1; }\n")
            try:
                objs = self.compiler.compile([src], output_dir=d, extra_postargs=flags)
                self.compiler.link_executable(objs, os.path.join(d, "omp"), extra_postargs=flags)
            except Exception:
                return False
        return True

    def _compiles(self, flags, strict):
        """Whether the compiler builds an empty function with these flags (warnings count as refusals when strict)."""
        with tempfile.TemporaryDirectory() as d:
            src = os.path.join(d, "probe.c")
            with open(src, "w") as f:
                f.write("int cs_probe(void) { return 0; }\n")
            try:
                self.compiler.compile([src], output_dir=d, extra_postargs=flags + (["-Werror"] if strict else []))
            except CompileError:
                return False
        return True


# CHARSTREAM_PATHS=avx2,baseline builds only those paths (a quicker build while working on the kernel).
only = [p for p in os.environ.get("CHARSTREAM_PATHS", "").split(",") if p]
extensions = [kernel(p) for p in (["baseline"] if portable else only or PATHS)]
# the CPU probe: the baseline's flags (it must load on any CPU)
extensions.append(Extension("charstream._cpu", ["ext/_cpu.pyx"], depends=["ext/cpu.h"], include_dirs=["ext"],
                            extra_compile_args=list(cflags)))

setup(
    cmdclass={"build_ext": build_paths},
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": 3,
            "boundscheck": debug,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": debug,
            "embedsignature": True,
        },
    ),
)
