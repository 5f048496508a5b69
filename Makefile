# The two commands in the README: `make run` and `make test`.
# Each installs what it needs first (scripts/setup), so both work on a fresh
# machine of this project's kind.

# This kind of machine runs PostgreSQL on loopback with trust auth; the tests
# create (and drop) their own databases on it. Set it empty to skip them.
GATEHOUSE_TEST_POSTGRES_URL ?= postgres://postgres@127.0.0.1:5432/test
export GATEHOUSE_TEST_POSTGRES_URL

.PHONY: run test setup lint bench

## run: build and start the service on the embedded SQLite default (127.0.0.1:8080, data in ./data)
run: setup
	cargo run --release --locked --bin gatehouse -- serve

## test: every test, on SQLite and on PostgreSQL
test: setup
	cargo test --workspace --locked

## bench: every benchmark in a release build, with its peers on loopback (docs/benchmarks.md);
## QUICK=1 for a smoke run of them all in about a minute
bench: setup
	QUICK=$(QUICK) scripts/bench

## lint: what CI checks before the tests
lint: setup
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

setup:
	@scripts/setup
