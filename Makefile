# `make app` and `make test` are the two commands a newcomer types (README.md).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export GRADIO_ANALYTICS_ENABLED := False
export TOKENIZERS_PARALLELISM := false

.PHONY: app test test-slow bench chromium clean

$(STAMP): requirements.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q --upgrade pip==25.3
	$(BIN)/pip install --disable-pip-version-check -q -r requirements.txt
	touch $(STAMP)

app: $(STAMP)
	$(BIN)/python app.py --host 127.0.0.1 --port 7860

# The browser tests need Debian's chromium; install it when we can, else they skip and say why.
chromium:
	@command -v chromium >/dev/null 2>&1 || ( [ "$$(id -u)" = 0 ] && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) ) || echo "chromium not installed: browser tests will skip"

test: $(STAMP) chromium
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	$(BIN)/python -m hldm bench

clean:
	rm -rf $(VENV)
