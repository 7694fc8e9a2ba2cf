# One-command setup on a fresh machine (no GPU needed):
#   make test   -> local .venv, torch==2.13.0 first, fastattn[test], CUDA extension if nvcc is found, then
#                  pytest (Triton kernels under TRITON_INTERPRET=1 when there is no GPU)
#   make test TORCH_INDEX=https://download.pytorch.org/whl/cpu  -> the CPU build of torch. Without it pip takes
#                  torch from PyPI (or your pip configuration): on Linux x86_64 that is the CUDA build, which
#                  pulls several GB of nvidia-* wheels; on macOS and Windows it is the CPU build.
#   make demo   -> the same setup, then `fastattn demo` (real all-MiniLM-L6-v2 weights, HF sdpa vs fastattn)
# torch is installed first and pinned, from TORCH_INDEX when given, so that the rest never pulls another build.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0
# e.g. https://download.pytorch.org/whl/cpu (CPU build) or .../whl/cu130; empty: PyPI / your pip configuration
TORCH_INDEX ?=
PYTEST_ARGS ?=
CSRC   := $(shell find csrc -name '*.cu' -o -name '*.cpp' -o -name '*.h' -o -name '*.cuh' 2>/dev/null)

.PHONY: test demo build install clean gpu-test

$(VENV)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -q "setuptools>=64" wheel "pybind11>=2.12" ninja
	# cuBLASLt headers + library for fastattn._C_blas (CUDA 13 ships them as a wheel; no torch pulled)
	if [ -x /usr/local/cuda/bin/nvcc ] || command -v nvcc >/dev/null; then \
	  $(PY) -m pip install -q --no-deps "nvidia-cublas>=13,<14"; fi
	# the extension is built by the `build` target (incremental ninja), not twice
	FASTATTN_BUILD_CUDA=0 $(PY) -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

build: $(VENV)/.installed
	$(PY) setup.py -q build_ext --inplace

test: build
	$(PY) -m fastattn info
	$(PY) -m pytest -q $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi; exit $$rc

demo: build
	HF_HUB_OFFLINE=1 $(PY) -m fastattn demo

gpu-test: build
	$(PY) -m pytest -q -m gpu $(PYTEST_ARGS)

clean:
	rm -rf build python/fastattn/_C*.so *.egg-info python/*.egg-info
