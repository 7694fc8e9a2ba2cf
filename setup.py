"""Build of fastattn's CUDA extension ``fastattn._C`` (pybind11 + ninja, no libtorch).

Environment:
  FASTATTN_BUILD_CUDA  unset: build if nvcc is found, else skip with a note; 1: build or fail loudly;
                       0: skip.
  FASTATTN_CUDA_ARCHS  ';'-separated, default "80;90a": one -gencode each ("90a" means
                       arch=compute_90a,code=sm_90a; "80" means arch=compute_80,code=sm_80). Sources listed
                       in SOURCE_ARCHS are compiled only for their own archs (those of them in this set).
  MAX_JOBS             ninja parallelism.
  CUDA_HOME / nvcc on PATH  where the toolkit is.

The extension receives raw device pointers, sizes, strides and the CUDA stream from Python, and links
the CUDA runtime statically: one build works with any torch. ``python setup.py build_ext --inplace``
works too.
"""

import fnmatch
import glob
import os
import runpy
import shutil
import subprocess
import sys
import sysconfig

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))

#: Per-source arch sets: (glob pattern relative to the repository root, archs). A .cu source that matches
#: a pattern is compiled only for the archs of the build (FASTATTN_CUDA_ARCHS) that are also listed here,
#: and left out of the extension when none is; every other source gets every arch of the build. A kernel
#: family that needs arch-specific instructions (wgmma / TMA: sm_90a) lives under its own directory and is
#: listed here, e.g. ("csrc/attention/sm90/*", ("90a",)); the binding layer then asks build_info() /
#: attention_fwd_instances() which families exist.
SOURCE_ARCHS = [
    ("csrc/attention/sm90/*", ("90a",)),
    ("csrc/attention/instances/*_sm90_*", ("90a",)),
]


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


def find_cublas(cuda_home):
    """``(include_dir, lib_dir, link_flag)`` of cuBLASLt, or ``None``. Looked for in FASTATTN_CUBLAS_HOME,
    the CUDA toolkit, then the ``nvidia-cublas`` wheel (``nvidia/cu13`` for CUDA 13, ``nvidia/cublas`` for
    the ``-cu12`` wheels) in this interpreter's site-packages. The wheel ships only ``libcublasLt.so.N``,
    so the link flag names the file (``-l:libcublasLt.so.13``) when no unversioned ``.so`` exists."""
    import site
    roots = [os.environ.get("FASTATTN_CUBLAS_HOME"), cuda_home]
    pkgs = list(sys.path) + [sysconfig.get_paths().get(k) for k in ("purelib", "platlib")]
    try:
        pkgs += site.getsitepackages() + [site.getusersitepackages()]
    except AttributeError:  # virtualenv's old site module
        pass
    for p in pkgs:
        if p:
            roots += [os.path.join(p, "nvidia", "cu13"), os.path.join(p, "nvidia", "cublas")]
    for root in roots:
        if not root or not os.path.exists(os.path.join(root, "include", "cublasLt.h")):
            continue
        for lib in ("lib64", "lib", os.path.join("targets", "x86_64-linux", "lib")):
            d = os.path.join(root, lib)
            if os.path.exists(os.path.join(d, "libcublasLt.so")):
                return os.path.join(root, "include"), d, "-lcublasLt"
            versioned = sorted(glob.glob(os.path.join(d, "libcublasLt.so.[0-9]*")), key=len)
            if versioned:
                return os.path.join(root, "include"), d, "-l:" + os.path.basename(versioned[0])
    return None


def parse_archs(spec):
    """``["80", "90a"]`` from ``"80;90a"``."""
    archs = []
    for a in [s.strip() for s in spec.replace(",", ";").split(";") if s.strip()]:
        num = a.rstrip("a")
        if not num.isdigit():
            raise SystemExit(f"FASTATTN_CUDA_ARCHS: bad arch {a!r} (expected e.g. 80 or 90a)")
        archs.append(a)
    if not archs:
        raise SystemExit("FASTATTN_CUDA_ARCHS is empty")
    return archs


def gencode(archs):
    return " ".join(f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs)


def source_archs(src, archs):
    """The archs of the build that ``src`` (relative to the repository root) is compiled for."""
    rel = src.replace(os.sep, "/")
    for pattern, only in SOURCE_ARCHS:
        if fnmatch.fnmatch(rel, pattern):
            return [a for a in archs if a in only]
    return list(archs)


def generate_attention_instances():
    """Bring csrc/attention/instances/ in line with the one list in generate_instances.py (rewrites only
    what changed, so ninja rebuilds nothing when nothing did)."""
    gen = runpy.run_path(os.path.join(ROOT, "csrc", "attention", "generate_instances.py"))
    for line in gen["write"]():
        print("fastattn: generate_instances:", line, file=sys.stderr)


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

        libraries = [f"-l{l}" for l in ext.cuda_libraries]
        extra_inc, extra_lib = [], []
        if "cublasLt" in ext.cuda_libraries:
            found = find_cublas(self.cuda_home)
            if found is None:
                raise SystemExit(f"{ext.name}: cublasLt.h / libcublasLt not found (pip install nvidia-cublas, "
                                 "or set FASTATTN_CUBLAS_HOME)")
            extra_inc, extra_lib = [found[0]], [found[1]]
            libraries = [found[2] if l == "-lcublasLt" else l for l in libraries]
            # run time: the wheel next to an installed fastattn ('$$' is ninja's escape of '$')
            libraries += ["-Wl,-rpath,'$$ORIGIN/../nvidia/cu13/lib'", "-Wl,-rpath,'$$ORIGIN/../nvidia/cublas/lib'"]
        archs = parse_archs(os.environ.get("FASTATTN_CUDA_ARCHS", "80;90a"))
        arch_names = [f"sm_{a}" for a in archs]
        out_path = os.path.abspath(self.get_ext_fullpath(ext.name))
        os.makedirs(os.path.dirname(out_path), exist_ok=True)
        bdir = os.path.abspath(os.path.join(self.build_temp, ext.name.replace(".", "_")))
        os.makedirs(bdir, exist_ok=True)
        cuda = self.cuda_home
        nvcc = os.path.join(cuda, "bin", "nvcc")
        cxx = os.environ.get("CXX", "c++")
        includes = [pybind11.get_include(), sysconfig.get_paths()["include"], os.path.join(cuda, "include"),
                    os.path.join(ROOT, "csrc")] + extra_inc
        inc = " ".join(f"-I{p}" for p in includes)
        defs = f"-DFASTATTN_ARCHS='\"{';'.join(arch_names)}\"'"
        common = "-O3 -std=c++17 -fPIC -fvisibility=hidden"
        nvcc_flags = (f"-O3 -std=c++17 -Xcompiler -fPIC -Xcompiler -fvisibility=hidden "
                      f"--expt-relaxed-constexpr --use_fast_math -lineinfo {defs} "
                      + os.environ.get("FASTATTN_NVCC_FLAGS", ""))
        lib_dirs = [os.path.join(cuda, d) for d in ("lib64", "lib", os.path.join("targets", "x86_64-linux", "lib"))]
        lib_dirs += [os.path.join(d, "stubs") for d in lib_dirs]
        lib_dirs = [d for d in lib_dirs if os.path.isdir(d)]
        lib_dirs += extra_lib
        libs = " ".join(f"-L{d}" for d in lib_dirs)
        rpath = ":".join(d for d in lib_dirs if not d.endswith("stubs"))
        lines = [
            "ninja_required_version = 1.3",
            f"rule nvcc\n  command = {nvcc} $gencode {nvcc_flags} {inc} -c $in -o $out -MD -MF $out.d\n  depfile = $out.d\n  deps = gcc\n  description = NVCC $in",
            f"rule cxx\n  command = {cxx} {common} {defs} {inc} -c $in -o $out -MD -MF $out.d\n  depfile = $out.d\n  deps = gcc\n  description = CXX $in",
            f"rule link\n  command = {cxx} -shared $in -o $out {libs} -Wl,-rpath,{rpath} -lcudart_static "
            + " ".join(libraries) + " -ldl -lpthread -lrt\n  description = LINK $out",
        ]
        objs = []
        for rel in ext.cuda_sources:
            src = os.path.join(ROOT, rel)
            obj = os.path.join(bdir, rel.replace(os.sep, "_") + ".o")
            if src.endswith(".cu"):
                src_archs = source_archs(rel, archs)
                if not src_archs:
                    print(f"fastattn: {rel} is not compiled (its archs are not in this build's {archs})",
                          file=sys.stderr)
                    continue
                lines.append(f"build {obj}: nvcc {src}\n  gencode = {gencode(src_archs)}")
            else:
                lines.append(f"build {obj}: cxx {src}")
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
    generate_attention_instances()
    srcs = sorted(glob.glob("csrc/**/*.cu", recursive=True) + glob.glob("csrc/**/*.cpp", recursive=True))
    # sources of separately linked extensions live under csrc/blas/
    return [s for s in srcs if not s.startswith(os.path.join("csrc", "blas"))]


ext_modules = [CUDAExtension("fastattn._C", cuda_sources())]
blas_sources = sorted(glob.glob("csrc/blas/*.cu") + glob.glob("csrc/blas/*.cpp"))
if blas_sources:
    # cuBLASLt headers/libs are not part of every toolkit install (CUDA 13 pip wheels ship them as
    # nvidia-cublas): without them _C_blas is not built and the cuda FFN backend reports why.
    if find_cublas(find_cuda_home()) is not None:
        ext_modules.append(CUDAExtension("fastattn._C_blas", blas_sources, libraries=["cublasLt"]))
    elif os.environ.get("FASTATTN_BUILD_CUDA", "").strip() != "0":
        print("fastattn: not building fastattn._C_blas: cublasLt.h / libcublasLt not found (pip install "
              "nvidia-cublas, or set FASTATTN_CUBLAS_HOME)", file=sys.stderr)

setup(ext_modules=ext_modules, cmdclass={"build_ext": NinjaBuildExt})
