# The two commands of the README. Builds use the `ci` profile for tests (no debug info)
# and the dev profile for the demo: a release build of this stack takes ~30 min on 2 cores.
.PHONY: setup demo test test-rust test-python lint bench

setup:
	./scripts/setup.sh

demo: setup
	cargo run --bin shoal -- demo $(ARGS)

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --profile ci -- -D warnings

test-rust:
	cargo nextest run --workspace --cargo-profile ci --no-fail-fast
	cargo test --workspace --doc --profile ci

test-python:
	cargo build --bin shoal --profile ci
	.venv/bin/python -m pytest -q tests/python

test: setup lint test-rust test-python

bench: setup
	cargo bench -p shoal-benches --bench end_to_end
