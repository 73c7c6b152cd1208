# pg_integrity — build, demo and test on a Debian machine with PostgreSQL 15.
#
#   make run    install what is missing, build, start a throwaway cluster with a demo database
#   make stop   stop that cluster
#   make test   install what is missing, then run every suite
#
# PostgreSQL refuses to run as root: when run as root, clusters run as the
# "postgres" user, in .pgdata/ under the project.

PG_MAJOR      ?= 15
PG_BIN        := /usr/lib/postgresql/$(PG_MAJOR)/bin
PG_CONFIG     := $(PG_BIN)/pg_config
PGXS_TEST     := /usr/lib/postgresql/$(PG_MAJOR)/lib/pgxs/src/test
PGRX_VERSION  := 0.18.1
DEB_PACKAGES  := postgresql-$(PG_MAJOR) postgresql-contrib postgresql-server-dev-$(PG_MAJOR) \
                 clang libclang-dev pkg-config sudo

PORT          ?= 5499
DATA          := $(CURDIR)/.pgdata
CLUSTER       := $(DATA)/cluster
SOCKET        := $(DATA)/socket
ifeq ($(shell id -u),0)
AS_PG         := runuser -u postgres --
RUNAS         := --runas postgres
else
AS_PG         :=
RUNAS         :=
endif
PSQL          := $(PG_BIN)/psql -X -v ON_ERROR_STOP=1 -h $(SOCKET) -p $(PORT) -U postgres
export PATH   := $(HOME)/.cargo/bin:$(PATH)

REGRESS       := $(sort $(basename $(notdir $(wildcard tests/sql/*.sql))))
ISOLATION     := $(sort $(basename $(notdir $(wildcard tests/specs/*.spec))))

.PHONY: all deps install run demo stop start test test-unit test-regress test-isolation \
        test-cluster test-bench-smoke bench clean

all: install

## Setup ---------------------------------------------------------------------

deps:
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null \
	    | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "== installing Debian packages:" $$missing; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@if ! cargo pgrx --version 2>/dev/null | grep -q ' $(PGRX_VERSION)$$'; then \
	    echo "== installing cargo-pgrx $(PGRX_VERSION)"; \
	    cargo install cargo-pgrx --version =$(PGRX_VERSION) --locked; \
	fi
	@if ! grep -qs '^pg$(PG_MAJOR) = "$(PG_CONFIG)"' $(HOME)/.pgrx/config.toml; then \
	    cargo pgrx init --pg$(PG_MAJOR) $(PG_CONFIG); \
	fi

install: deps
	cargo pgrx install --release --pg-config $(PG_CONFIG)

## A throwaway cluster -------------------------------------------------------

start:
	@mkdir -p $(DATA) && chown $(if $(AS_PG),postgres,$$(id -un)) $(DATA)
	@if [ ! -f $(CLUSTER)/PG_VERSION ]; then \
	    $(AS_PG) $(PG_BIN)/initdb -D $(CLUSTER) -U postgres -A trust --no-instructions >/dev/null; \
	    $(AS_PG) mkdir -p $(SOCKET); \
	fi
	@if ! $(AS_PG) $(PG_BIN)/pg_ctl -D $(CLUSTER) status >/dev/null 2>&1; then \
	    $(AS_PG) env -u RUST_BACKTRACE $(PG_BIN)/pg_ctl -D $(CLUSTER) -l $(DATA)/cluster.log -w start \
	        -o "-p $(PORT) -c listen_addresses='' -c unix_socket_directories=$(SOCKET) -c fsync=off" >/dev/null; \
	fi
	@echo "== PostgreSQL $(PG_MAJOR) running: $(DATA)/cluster, socket $(SOCKET), port $(PORT)"

stop:
	@if [ -f $(CLUSTER)/postmaster.pid ]; then \
	    $(AS_PG) $(PG_BIN)/pg_ctl -D $(CLUSTER) -m fast -w stop; \
	else echo "no cluster running"; fi

run: install start demo

demo:
	@$(PSQL) -q -d postgres -c 'DROP DATABASE IF EXISTS integrity_demo' -c 'CREATE DATABASE integrity_demo'
	@$(PSQL) -q -d integrity_demo -o /dev/null -f sql/demo/schema.sql
	@$(PSQL) -d integrity_demo -v ON_ERROR_STOP=0 -f sql/demo/refused_writes.sql
	@echo
	@echo "== The demo database is ready. Connect with:"
	@echo "   $(PG_BIN)/psql -h $(SOCKET) -p $(PORT) -U postgres integrity_demo"
	@echo "   (make stop stops the cluster)"

## Tests ---------------------------------------------------------------------

test: deps test-unit install start test-regress test-isolation test-cluster test-bench-smoke
	@echo "== all suites passed"

test-unit:
	@mkdir -p $(DATA) && chown $(if $(AS_PG),postgres,$$(id -un)) $(DATA)
	cargo pgrx test pg$(PG_MAJOR) $(RUNAS) --pgdata $(DATA)/pgrx-test

test-regress:
	@mkdir -p tests/results
	@$(PSQL) -q -d postgres -c 'DROP DATABASE IF EXISTS integrity_regress' -c 'CREATE DATABASE integrity_regress'
	$(PGXS_TEST)/regress/pg_regress --use-existing --host=$(SOCKET) --port=$(PORT) --user=postgres \
	    --dbname=integrity_regress --inputdir=tests --outputdir=tests/results $(REGRESS) \
	    || { cat tests/results/regression.diffs; exit 1; }

test-isolation:
	@mkdir -p tests/results/isolation
	@$(PSQL) -q -d postgres -c 'DROP DATABASE IF EXISTS integrity_isolation' -c 'CREATE DATABASE integrity_isolation'
	$(PGXS_TEST)/isolation/pg_isolation_regress --use-existing --host=$(SOCKET) --port=$(PORT) --user=postgres \
	    --dbname=integrity_isolation --inputdir=tests --outputdir=tests/results/isolation $(ISOLATION) \
	    || { cat tests/results/isolation/regression.diffs; exit 1; }

test-cluster:
	PG_BIN=$(PG_BIN) SOCKET=$(SOCKET) PORT=$(PORT) DATA=$(DATA) AS_PG="$(AS_PG)" pgrx-tests/run

# A few thousand rows through every benchmark workload, so that make bench
# keeps working; it fails on errors only, never on timings.
test-bench-smoke:
	BENCH_ROWS=2000 BENCH_REPS=1 BENCH_SECONDS=1 BENCH_PROFILE=0 PG_BIN=$(PG_BIN) DATA=$(DATA)/bench-smoke \
	    AS_PG="$(AS_PG)" tests/bench/run >$(DATA)/bench-smoke.log 2>&1 \
	    || { tail -n 40 $(DATA)/bench-smoke.log; exit 1; }
	@echo "== benchmark smoke run passed ($(DATA)/bench-smoke/BENCHMARKS.md)"

## Benchmarks (never part of make test's pass/fail) ---------------------------

bench: install
	PG_BIN=$(PG_BIN) DATA=$(DATA)/bench AS_PG="$(AS_PG)" tests/bench/run

clean: stop
	rm -rf $(DATA) tests/results
	cargo clean
