# Two commands do all the set-up on a fresh machine (Python 3.11+ and make):
#   make serve   install, then serve Parley on http://localhost:8000 (embedded event log)
#   make test    install (and Chromium, redis-server, Node when missing: apt-get, as root or via sudo),
#                then lint, type-check, test
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: serve test lint check system-deps bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/parley serve

# Browser tests need Debian's Chromium; Redis tests need redis-server (or REDIS_URL); the
# page's presence logic is unit-tested under Node (tests/test_js_modules.py); the alert rules
# are checked with promtool (Debian's prometheus package: on a systemd host it also starts a
# Prometheus service; `systemctl disable --now prometheus` if unwanted). Installing what is
# missing takes apt-get: as root, or through sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

system-deps:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v redis-server >/dev/null 2>&1 || [ -n "$$REDIS_URL" ] || missing="$$missing redis-server"; \
	command -v node >/dev/null 2>&1 || missing="$$missing nodejs"; \
	command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

lint: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: $(STAMP) system-deps lint
	$(PY) -m pytest

clean:
	rm -rf $(VENV) .parley parley.db parley.db-*
