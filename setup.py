"""Build of fastattn's CUDA extension ``fastattn._C`` (pybind11 + ninja, no libtorch).

Environment:
  FASTATTN_BUILD_CUDA  unset: build if nvcc is found, else skip with a note; 1: build or fail loudly;
                       0: skip.
  FASTATTN_CUDA_ARCHS  ';'-separated, default "80;90a": one -gencode each ("90a" means
                       arch=compute_90a,code=sm_90a; "80" means arch=compute_80,code=sm_80).
  MAX_JOBS             ninja parallelism.
  CUDA_HOME / nvcc on PATH  where the toolkit is.

The extension receives raw device pointers, sizes, strides and the CUDA stream from Python, and links
the CUDA runtime statically: one build works with any torch. ``python setup.py build_ext --inplace``
works too.
"""

import glob
import os
import shutil
import subprocess
import sys
import sysconfig

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))


def find_cuda_home():
    """The CUDA toolkit root: CUDA_HOME/CUDA_PATH, else /usr/local/cuda, else nvcc's parent (an nvcc
    on PATH may be a wrapper script, so the toolkit is confirmed by its headers)."""
    cands = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc is not None:
        cands.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    for home in cands:
        if home and os.path.exists(os.path.join(home, "bin", "nvcc")) and \
                os.path.exists(os.path.join(home, "include", "cuda_runtime.h")):
            return home
    return None


def parse_archs(spec):
    flags, names = [], []
    for a in [s.strip() for s in spec.replace(",", ";").split(";") if s.strip()]:
        num = a.rstrip("a")
        if not num.isdigit():
            raise SystemExit(f"FASTATTN_CUDA_ARCHS: bad arch {a!r} (expected e.g. 80 or 90a)")
        flags.append(f"-gencode=arch=compute_{a},code=sm_{a}")
        names.append(f"sm_{a}")
    if not flags:
        raise SystemExit("FASTATTN_CUDA_ARCHS is empty")
    return flags, names


class CUDAExtension(Extension):
    """An extension compiled by nvcc/c++ through a generated ninja file."""

    def __init__(self, name, sources, libraries=()):
        super().__init__(name, sources=[])
        self.cuda_sources = sources
        self.cuda_libraries = list(libraries)


class NinjaBuildExt(build_ext):
    def run(self):
        mode = os.environ.get("FASTATTN_BUILD_CUDA", "").strip()
        self.cuda_home = find_cuda_home()
        self.skip_reason = None
        if mode == "0":
            self.skip_reason = "FASTATTN_BUILD_CUDA=0"
        elif self.cuda_home is None:
            if mode == "1":
                raise SystemExit("FASTATTN_BUILD_CUDA=1 but nvcc was not found (set CUDA_HOME or put nvcc on PATH)")
            self.skip_reason = "nvcc not found"
        if self.skip_reason:
            print(f"fastattn: skipping the CUDA extension ({self.skip_reason}); the cuda backend will "
                  "report itself unavailable", file=sys.stderr)
            return
        super().run()

    def build_extension(self, ext):
        if not isinstance(ext, CUDAExtension):
            return super().build_extension(ext)
        import pybind11

        archs, arch_names = parse_archs(os.environ.get("FASTATTN_CUDA_ARCHS", "80;90a"))
        out_path = os.path.abspath(self.get_ext_fullpath(ext.name))
        os.makedirs(os.path.dirname(out_path), exist_ok=True)
        bdir = os.path.abspath(os.path.join(self.build_temp, ext.name.replace(".", "_")))
        os.makedirs(bdir, exist_ok=True)
        cuda = self.cuda_home
        nvcc = os.path.join(cuda, "bin", "nvcc")
        cxx = os.environ.get("CXX", "c++")
        includes = [pybind11.get_include(), sysconfig.get_paths()["include"], os.path.join(cuda, "include"),
                    os.path.join(ROOT, "csrc")]
        inc = " ".join(f"-I{p}" for p in includes)
        defs = f"-DFASTATTN_ARCHS='\"{';'.join(arch_names)}\"'"
        common = "-O3 -std=c++17 -fPIC -fvisibility=hidden"
        nvcc_flags = (f"-O3 -std=c++17 {' '.join(archs)} -Xcompiler -fPIC -Xcompiler -fvisibility=hidden "
                      f"--expt-relaxed-constexpr --use_fast_math -lineinfo {defs} "
                      + os.environ.get("FASTATTN_NVCC_FLAGS", ""))
        lib_dirs = [os.path.join(cuda, d) for d in ("lib64", "lib", os.path.join("targets", "x86_64-linux", "lib"))]
        lib_dirs += [os.path.join(d, "stubs") for d in lib_dirs]
        lib_dirs = [d for d in lib_dirs if os.path.isdir(d)]
        libs = " ".join(f"-L{d}" for d in lib_dirs)
        rpath = ":".join(d for d in lib_dirs if not d.endswith("stubs"))
        lines = [
            "ninja_required_version = 1.3",
            f"rule nvcc\n  command = {nvcc} {nvcc_flags} {inc} -c $in -o $out -MD -MF $out.d\n  depfile = $out.d\n  deps = gcc\n  description = NVCC $in",
            f"rule cxx\n  command = {cxx} {common} {defs} {inc} -c $in -o $out -MD -MF $out.d\n  depfile = $out.d\n  deps = gcc\n  description = CXX $in",
            f"rule link\n  command = {cxx} -shared $in -o $out {libs} -Wl,-rpath,{rpath} -lcudart_static "
            + " ".join(f"-l{l}" for l in ext.cuda_libraries) + " -ldl -lpthread -lrt\n  description = LINK $out",
        ]
        objs = []
        for src in ext.cuda_sources:
            src = os.path.join(ROOT, src)
            obj = os.path.join(bdir, os.path.relpath(src, ROOT).replace(os.sep, "_") + ".o")
            rule = "nvcc" if src.endswith(".cu") else "cxx"
            lines.append(f"build {obj}: {rule} {src}")
            objs.append(obj)
        lines.append(f"build {out_path}: link {' '.join(objs)}")
        with open(os.path.join(bdir, "build.ninja"), "w") as f:
            f.write("\n".join(lines) + "\n")
        cmd = [shutil.which("ninja") or "ninja", "-C", bdir]
        if os.environ.get("MAX_JOBS"):
            cmd += ["-j", os.environ["MAX_JOBS"]]
        print("fastattn: building", ext.name, "for", ", ".join(arch_names), "with", " ".join(cmd), file=sys.stderr)
        subprocess.check_call(cmd)


def cuda_sources():
    srcs = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/**/*.cu", recursive=True)
                  + glob.glob("csrc/*/*.cpp"))
    # sources of separately linked extensions live under csrc/blas/
    return [s for s in srcs if not s.startswith(os.path.join("csrc", "blas"))]


ext_modules = [CUDAExtension("fastattn._C", cuda_sources())]
blas_sources = sorted(glob.glob("csrc/blas/*.cu") + glob.glob("csrc/blas/*.cpp"))
if blas_sources:
    ext_modules.append(CUDAExtension("fastattn._C_blas", blas_sources, libraries=["cublasLt"]))

setup(ext_modules=ext_modules, cmdclass={"build_ext": NinjaBuildExt})
