# Two commands on a fresh machine: `make run` and `make test`. Both build .venv first (`make venv`).
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv run test browser clean

venv: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $(STAMP)

run: venv
	$(PY) app.py $(ARGS)

# Browser tests drive Debian's Chromium through Playwright; install it when missing (root on CI).
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
	  || echo "!!! could not install Debian chromium: browser tests will be SKIPPED !!!"

test: venv browser
	$(PY) -m pytest -q $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
