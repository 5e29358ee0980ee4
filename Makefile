# mutexd. Deno and Bun come from npm (devDependencies), so `npm ci` is the only install step.
BIN := node_modules/.bin
DENO := $(BIN)/deno
BUN := $(BIN)/bun
CONFIG ?= cluster/cluster.toml

SEED ?= 1
N ?= 200
START ?= 1
CHAOS_SECONDS ?= 60
CHAOS_NETWORK ?= auto

.PHONY: install test test-deno test-bun build build-deno client pack up bench bench-peers bench-ring bench-ring-quick chaos sim sim-many sim-replay sim-speed check clean

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

install: node_modules/.installed

## test: the whole suite under Deno, then under Bun (what CI runs). deno.json's tasks call deno
## through node_modules/deno/bin.cjs: `deno task` runs a node_modules/.bin entry as a script, and
## after npm's postinstall that entry is the ELF binary itself.
test: test-deno test-bun

test-deno: install
	$(DENO) task test

test-bun: install
	$(BUN) test tests/

## build: dist/mutexd, one self-contained binary, made offline by bun build --compile; only
## when a source (or the install) is newer than it. The install's stamp file, not the phony
## `install`, is the prerequisite: a phony one is always out of date, so `make up` and `make chaos`
## rebuilt the binary every time.
build: dist/mutexd
## The file, not the phony `install`: a phony prerequisite is always out of date, so the binary
## was rebuilt on every `make chaos`; now only when a source or the install changed.
dist/mutexd: node_modules/.installed package.json $(shell find main.ts lib cluster -name '*.ts')
	$(BUN) build --compile main.ts --outfile dist/mutexd

## client: dist/client/, the client package's JavaScript and .d.ts (mutexd/client, mutexd/ring) for
## Node, Bun and Deno, from lib/client by deno pack (tools/build_client.ts; offline, no tsc).
client:
	$(BUN) tools/build_client.ts

## pack: the client package as a tarball, dist/mutexd-VERSION.tgz (npm pack runs `client` first, its prepack).
pack:
	npm pack --pack-destination dist

## build-deno: deno compile (downloads the denort runtime: needs internet; not on this workplace).
build-deno: install
	$(DENO) compile -A --output dist/mutexd-deno main.ts

## up: the quick-start local cluster (Ctrl-C stops it); another cluster file: make up CONFIG=FILE.
up: dist/mutexd
	dist/mutexd up --config $(CONFIG)

## sim: one simulator run with its readable event trace (make sim SEED=42).
sim: install
	$(BUN) tests/sim/vopr.ts --seed $(SEED)

## sim-many: a batch of seeds, every node kind; failing seeds are listed and saved under
## tests/sim/failed/ (git-ignored; a known bug is moved to tests/sim/replay/ and listed in its
## index.json), then one line per kind: runs, failures, failures by checker.
sim-many: install
	$(BUN) tests/sim/vopr.ts --many $(N) --start $(START)

## sim-replay: run a saved failure again (make sim-replay FILE=tests/sim/failed/SEED.json).
sim-replay: install
	$(BUN) tests/sim/vopr.ts --replay $(FILE)

## sim-speed: simulated seconds per wall second, 5-node ring + lock servers (median of 5).
sim-speed: install
	$(BUN) tests/sim/speed.ts

## bench: the lock service under the peer benchmark's workloads, takeover time, and the ring's repair (docs/bench.md).
bench: install
	$(BUN) tests/bench/run.ts

## bench-peers: mutexd (lone and replicated, with a cluster secret) beside etcd, Redis and ZooKeeper
## in one run, one driver, rounds interleaved (installs the peers' Debian packages if missing; docs/bench.md).
bench-peers: install
	$(BUN) tests/bench/peers/run.ts

## bench-ring: only the ring: repair under faults on a 5-node ring, idle CPU, its speed on 3, 5 and 9 nodes, kills on 3 and 9 (docs/bench.md, "Ring repair", "Ring speed"; root for R3's namespace).
bench-ring: install
	$(BUN) tests/bench/run.ts --only ring

## bench-ring-quick: the ring's speed only (R6-R8: 3, 5, 9 nodes), one run of 2 s phases, about a minute: for development.
bench-ring-quick: install
	$(BUN) tests/bench/run.ts --only R6,R7,R8 --quick

## chaos: the real binaries under kill -9, SIGSTOP, partitions and lossy links, then the offline
## history check (docs/chaos.md). make chaos CHAOS_SECONDS=120 CHAOS_SEED=303 CHAOS_NETWORK=auto|netns|loopback CHAOS_ONLY=kind,kind
chaos: build
	$(BUN) tests/chaos/run.ts --seconds $(CHAOS_SECONDS) --network $(CHAOS_NETWORK) $(if $(CHAOS_SEED),--seed $(CHAOS_SEED)) $(if $(CHAOS_ONLY),--only $(CHAOS_ONLY))

check: install
	$(DENO) check main.ts tests/ cluster/dashboard/page_script.ts

clean:
	rm -rf dist .data
