# The two commands of the README. Builds use the `ci` profile for tests (no debug info)
# for the demo too, so `make test` after `make demo` reuses its build. A release build of
# this stack takes ~30 min on 2 cores: only `make bench` makes one.
#
# Every build of binaries goes through BUILD: the same packages and targets as the test
# build, so cargo resolves the same features and reuses its artifacts. A narrower build
# (`cargo run --bin shoal`, `-p shoal-examples`) resolves fewer features (proptest and
# criterion turn on getrandom/serde features) and compiles DataFusion and its stack again:
# minutes and gigabytes each time.
#
# FEATURES turns on the test-only fault switches (SHOAL_FAULT_*) in every test build, and
# only there: a release build (`cargo build --release`) never has them.
FEATURES := --features shoal-engine/fault-injection
BUILD := cargo build --workspace --bins --examples --profile ci $(FEATURES)
.PHONY: setup demo test test-rust test-examples test-python lint bench bench-kernels bench-client pipelines

setup:
	./scripts/setup.sh

demo: setup
	$(BUILD)
	target/ci/shoal demo $(ARGS)

pipelines: setup
	$(BUILD)
	# train_* first: the A/B pipeline compares the models they register.
	for f in examples/pipelines/train_*.toml $$(ls examples/pipelines/*.toml | grep -v -e /train_ -e /text_direction); do \
	  echo "== $$f"; target/ci/shoal run $$f || exit 1; done
	# Images: text lines rendered on two sites, RapidOCR's classifier from its wheel.
	.venv/bin/python tests/data/make_text_lines.py target/shoal-text-lines
	target/ci/shoal run examples/pipelines/text_direction.toml --data target/shoal-text-lines \
	  --models target/shoal-text-lines/models

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --profile ci $(FEATURES) -- -D warnings

test-examples:
	$(BUILD)
	target/ci/examples/embedded_predict

test-rust:
	cargo nextest run --workspace --cargo-profile ci $(FEATURES) --no-fail-fast
	cargo test --workspace --doc --profile ci $(FEATURES)

test-python:
	$(BUILD)
	.venv/bin/python -m pytest -q tests/python

test: setup lint test-rust test-examples test-python

# shoal vs the floor and vs DuckDB, DataFusion-python, Daft and Ray Data (installed into
# .shoal/bench-venv by scripts/bench-setup.sh, with the bench models).
bench: setup
	./scripts/bench-setup.sh
	cargo bench -p shoal-benches --bench end_to_end

# criterion benches of the hot kernels (tensor input, feature kernels, trees, merge).
bench-kernels: setup
	cargo bench -p shoal-benches --bench kernels

# Time to first batch and rows/s of a 1.2M-row result through ADBC (Flight SQL).
bench-client: setup
	$(BUILD)
	.venv/bin/python benches/flight_sql_client.py
