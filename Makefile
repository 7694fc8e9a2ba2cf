# One-command setup on a fresh machine (no GPU needed):
#   make test   -> local .venv, torch==2.13.0 (CPU wheel) first, fastattn[test], CUDA extension if nvcc
#                  is found, then pytest (Triton kernels under TRITON_INTERPRET=1 when there is no GPU)
#   make demo   -> the same setup, then `fastattn demo` (real all-MiniLM-L6-v2 weights, eager vs fastattn)
# torch is installed first and pinned: a bare `torch` requirement would pull several GB of CUDA wheels.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0
PYTEST_ARGS ?=
CSRC   := $(shell find csrc -name '*.cu' -o -name '*.cpp' -o -name '*.h' -o -name '*.cuh' 2>/dev/null)

.PHONY: test demo build install clean gpu-test

$(VENV)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
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
