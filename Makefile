# pontoon — the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: test deps lint demo bench fuzz

## test: install what is missing, then formatting, lints and every test (real servers included)
test: deps lint
	status=0; $(CARGO) test --locked || status=$$?; tests/support/await-stopped.sh && exit $$status

## deps: install the tools and servers the tests need (idempotent; cached outside the tree)
deps:
	tests/support/install-deps.sh

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	hadolint Dockerfile

## bench: the benchmarks that back the README's figures
bench: deps
	$(CARGO) bench --locked

## fuzz: five minutes of cargo-fuzz on the renderer, seeded with the example's team files (needs nightly and cargo-fuzz)
fuzz:
	mkdir -p fuzz/corpus/render
	cd fuzz && $(CARGO) +nightly fuzz run render corpus/render ../config/example-platform/teams -- -max_total_time=300 -max_len=8192

## demo: a local control plane (staging and prod), the example platform repo, and pontoon syncing it
demo:
	scripts/demo.sh
