# `make test` and `make demo` set everything up from a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install test demo bench gpu-check gpu-dry-run gpu-wheels clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt setuptools
	$(PY) -m pip install -q -c constraints.txt -e '.[decord,test]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -ra

demo: $(STAMP)
	$(PY) -m clipae.demo.run

bench: $(STAMP)
	$(VENV)/bin/clipae-bench extract tests/data/videos

# The GPU machine's own Python (with torch), no virtualenv: the repository is put on the path as
# `clipae` through a symlink in a temporary folder. docs/gpu.md says what the check does.
GPU_PYTHON ?= python3
WITH_CLIPAE = pp=$$(mktemp -d) && ln -s "$(CURDIR)" "$$pp/clipae" && \
	PYTHONPATH="$$pp$${PYTHONPATH:+:$$PYTHONPATH}" $(GPU_PYTHON) -m clipae bench gpu

gpu-check:
	@$(WITH_CLIPAE) $(GPU_ARGS); rc=$$?; rm -rf "$$pp"; exit $$rc

gpu-dry-run:
	@$(WITH_CLIPAE) --dry-run $(GPU_ARGS); rc=$$?; rm -rf "$$pp"; exit $$rc

# the pinned wheels of what a GPU image lacks, into .whl/ (git-ignored, at most 64 MiB)
gpu-wheels:
	@$(WITH_CLIPAE) --download-wheels; rc=$$?; rm -rf "$$pp"; exit $$rc

clean:
	rm -rf $(VENV) *.egg-info
