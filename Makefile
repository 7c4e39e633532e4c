# Two commands on a fresh machine: `make run` and `make test`. Both build .venv first (`make venv`).
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv run test browser mutation clean

venv: $(STAMP)

$(STAMP): requirements.txt
	@echo "make venv: creating $(VENV) and installing requirements.txt (the first time takes ~2 minutes) ..."
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -r requirements.txt
	touch $(STAMP)
	@echo "make venv: done"

run: venv
	$(PY) app.py $(ARGS)

# Browser tests drive Debian's Chromium through Playwright; install it when missing (root on CI). A browser that
# cannot be installed stops here: on CI (CI=true) the browser tests fail without it. M1_SKIP_BROWSER=1 skips them.
browser:
	@if [ "$$M1_SKIP_BROWSER" = 1 ]; then echo "M1_SKIP_BROWSER=1: browser tests will be skipped"; \
	elif ! command -v chromium >/dev/null 2>&1; then \
	  echo "installing Debian's chromium for the browser tests (apt-get install chromium) ..."; \
	  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || { \
	    echo "!!! could not install Debian's chromium: run 'apt-get install -y chromium' as root," \
	         "or set M1_SKIP_BROWSER=1 to skip the browser tests !!!" >&2; exit 1; }; \
	fi

test: venv browser
	$(PY) -m pytest -q $(ARGS)

# Mutation testing (not part of `make test`, not on CI): mutmut mutates the modules in pyproject.toml [tool.mutmut]
# and runs the fast tests that reach each mutant. One module at a time (each rerun in full), each capped at
# MUTATION_TIMEOUT seconds; results stay in mutants/, the score per module goes to mutants/summary.md.
# `make mutation MUTATION_MODULES=engine.serving.scheduler` runs one; `$(VENV)/bin/mutmut show NAME` shows a survivor,
# `$(VENV)/bin/mutmut run NAME...` reruns given mutants. About 20 mutants a minute on 2 busy cores.
MUTATION_MODULES ?= engine.serving.block_manager engine.serving.scheduler engine.serving.state_cache \
	engine.serving.snapshots engine.serving.sampling studio.store studio.api_request studio.api_schema \
	studio.documents.limits
MUTATION_TIMEOUT ?= 900

mutation: venv
	for m in $(MUTATION_MODULES); do timeout $(MUTATION_TIMEOUT) $(VENV)/bin/mutmut run "$$m.*" || true; done
	$(PY) bench/mutation.py

clean:
	rm -rf $(VENV) .pytest_cache mutants
