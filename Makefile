# Two entry points: `make demo` runs the quickstart pipeline, `make test` the
# test suite (`make test-fast`: the tier without Ray, vLLM, DeepSpeed, a browser
# or models past tiny-random, for the edit loop). All install into .venv first;
# the stamp file makes a second call skip the install unless the install inputs
# changed. `make test` also installs headless Chromium for the browser tests.
VENV ?= .venv
CONFIG ?= experiments/quickstart.yaml
PYTEST_ARGS ?=
INSTALL_INPUTS := pyproject.toml constraints/cpu.txt scripts/install.sh
STAMP := $(VENV)/.installed-$(shell cat $(INSTALL_INPUTS) | sha1sum | cut -c1-12)
BROWSER_STAMP := $(VENV)/.browser-$(shell sha1sum scripts/install_browser.sh | cut -c1-12)

.PHONY: demo test test-fast install
demo: $(STAMP)
	$(VENV)/bin/ray-distill run $(CONFIG)

test: $(STAMP) $(BROWSER_STAMP)
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(VENV)/bin/python -m pytest -m "not (slow or ray or vllm or deepspeed or browser)" $(PYTEST_ARGS)

install: $(STAMP)

$(BROWSER_STAMP): scripts/install_browser.sh $(STAMP)
	rm -f $(VENV)/.browser-*
	bash scripts/install_browser.sh
	touch $@

$(STAMP): $(INSTALL_INPUTS)
	rm -f $(VENV)/.installed-*
	bash scripts/install.sh $(VENV)
	touch $@
