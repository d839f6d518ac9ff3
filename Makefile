# One command to set up and run the default comparison, one to set up and run the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup system-deps demo phones video epic test lint clean bench-esn bench-video

# Debian packages the tests and generators need, installed when absent (root or sudo).
APT_PACKAGES := festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts chromium
APT_PACKAGES += slurm-wlm munge postgresql  # a one-node Slurm and a PostgreSQL, started by the tests

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $@

setup: $(BIN)/.installed

demo: setup  ## the default comparison: the packaged suite quick (src/echoes/configs/suites/quick.yaml)
	$(BIN)/echoes compare

phones: setup system-deps  ## the phones suite on a Festival corpus written to data/speech (once)
	@[ -d data/speech/TRAIN ] || $(BIN)/echoes data make-speech data/speech
	$(BIN)/echoes compare phones

video: setup  ## the video-quick suite on generated UCF101-layout videos in data/ucf101-synthetic (once)
	@[ -d data/ucf101-synthetic/UCF-101 ] || $(BIN)/echoes data make-videos data/ucf101-synthetic
	$(BIN)/echoes compare video-quick

epic: setup  ## the epic-quick suite (verb + noun) on a generated EPIC-KITCHENS-layout set in data/epic-synthetic (once)
	@[ -d data/epic-synthetic/annotations ] || $(BIN)/echoes data make-epic data/epic-synthetic
	$(BIN)/echoes compare epic-quick

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

test: setup system-deps  ## the whole test suite
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check src tests benchmarks

bench-esn: setup  ## ESN benchmarks: vs ReservoirPy (installed here), vs LSTM/GRU, harvest rate
	$(BIN)/pip install -q -c constraints.txt -e '.[bench]'
	$(BIN)/python benchmarks/esn_vs_reservoirpy.py
	$(BIN)/python benchmarks/esn_vs_rnn.py
	$(BIN)/python benchmarks/esn_harvest.py

bench-video: setup  ## video pipeline: decode and feature-extraction clips/s, training time on the cache
	$(BIN)/python benchmarks/video_pipeline.py

clean:
	rm -rf echoes-runs .pytest_cache
