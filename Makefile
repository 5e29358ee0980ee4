# mutexd. Deno and Bun come from npm (devDependencies), so `npm ci` is the only install step.
BIN := node_modules/.bin
DENO := $(BIN)/deno
BUN := $(BIN)/bun
CONFIG ?= cluster/cluster.toml

.PHONY: install test test-deno test-bun build build-deno up bench chaos sim sim-many check clean

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

install: node_modules/.installed

## test: the whole suite under Deno, then under Bun (what CI runs).
test: test-deno test-bun

test-deno: install
	$(DENO) task test

test-bun: install
	$(BUN) test tests/

## build: dist/mutexd, one self-contained binary, made offline by bun build --compile.
build: dist/mutexd
dist/mutexd: install $(shell find main.ts lib cluster -name '*.ts')
	$(BUN) build --compile main.ts --outfile dist/mutexd

## build-deno: deno compile (downloads the denort runtime: needs internet; not on this workplace).
build-deno: install
	$(DENO) compile -A --output dist/mutexd-deno main.ts

## up: the quick-start local cluster (Ctrl-C stops it).
up: dist/mutexd
	dist/mutexd up --config $(CONFIG)

check: install
	$(DENO) check main.ts tests/

clean:
	rm -rf dist .data
