# ketch: `make run` serves a directory, `make test` installs what the tests need and runs them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
FUZZ_STAMP := $(VENV)/.installed-fuzz
# `make fuzz` runs the protocol fuzz target this long (seconds); findings go to fuzz/crashes/.
FUZZ_SECONDS ?= 60
# `make soak` (not part of `make test`): this many sessions for this many seconds.
SOAK_SESSIONS ?= 500
SOAK_SECONDS  ?= 300
# `make bench` (not part of `make test`): rounds per scenario (medians), RETR/STOR file
# size in MiB, and comma lists to narrow a run: BENCH_ONLY=retr,list BENCH_SERVERS=ketch,vsftpd
# (scenarios: retr stor sessions idle list ftps, or 1-6; servers: ketch pyftpdlib vsftpd pure-ftpd,
# and floor for the sessions scenario only: see bench-floor).
BENCH_ROUNDS  ?= 3
BENCH_SIZE    ?= 1024
BENCH_ONLY    ?=
BENCH_SERVERS ?=
BENCH_STAMP   := $(VENV)/.installed-bench
ROOT   ?= .
# Debian packages the tests drive as real FTP peers (curl, lftp) or build network
# labs with (iproute2, nftables); `ketch firewall` output is checked by nft and
# iptables-restore; openssl is the TLS peer for FTPS checks. The FTP servers the client is
# tested against (vsftpd, pure-ftpd) conflict as packages: scripts/fetch-peer-servers
# unpacks them under .peers/ and installs the libraries they need.
TEST_DEBIAN_PACKAGES := curl lftp iproute2 nftables iptables openssl

.PHONY: run test check lint typecheck pytest fuzz soak bench bench-floor bench-ab clean

$(STAMP): pyproject.toml
	scripts/make-venv $(PYTHON) $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

# ROOT in single quotes (its own quotes escaped), so a path with spaces is one argument.
run: $(STAMP)
	$(BIN)/ketch serve --root '$(subst ','\'',$(ROOT))'

test: $(STAMP)
	scripts/install-debian-packages $(TEST_DEBIAN_PACKAGES)
	scripts/fetch-peer-servers .peers
	$(MAKE) --no-print-directory lint typecheck pytest

# atheris ships wheels for common platforms; elsewhere pip builds it, which needs clang.
$(FUZZ_STAMP): $(STAMP)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[fuzz]' || { \
	    scripts/install-debian-packages clang && \
	    $(BIN)/pip install --quiet --disable-pip-version-check -e '.[fuzz]'; }
	touch $@

# New inputs go to fuzz/corpus-generated/ (first directory); fuzz/corpus/ holds the seeds.
fuzz: $(FUZZ_STAMP)
	mkdir -p fuzz/corpus-generated fuzz/crashes
	$(BIN)/python fuzz/fuzz_protocol.py -max_total_time=$(FUZZ_SECONDS) -timeout=10 \
	    -artifact_prefix=fuzz/crashes/ fuzz/corpus-generated fuzz/corpus

lint: $(STAMP)
	$(BIN)/ruff check src tests fuzz bench soak harness
	$(BIN)/ruff format --check src tests fuzz bench soak harness

typecheck: $(STAMP)
	$(BIN)/mypy --strict src

# `ketch serve` runs on uvloop when it is installed, as it is for the tests, so the whole
# suite runs on uvloop (an implicit-FTPS handshake race showed only there). The control-
# connection, TLS and lifecycle suites run again on asyncio's own loop, which serves when
# uvloop is not installed. (Plain `pytest` runs the in-process servers on asyncio.)
ASYNCIO_SUITES = tests/integration/test_ftps_server.py tests/integration/test_session_behaviour.py \
    tests/integration/test_refusals.py tests/integration/test_lifecycle.py \
    tests/integration/test_extensions.py

pytest: $(STAMP)
	KETCH_EVENT_LOOP=uvloop $(BIN)/pytest -q
	KETCH_EVENT_LOOP=asyncio $(BIN)/pytest -q $(ASYNCIO_SUITES)

# bench/ and soak/ import the shared harness/ package from the repository root.
# The server under many sessions for minutes; samples and summary go to soak/results/.
soak: $(STAMP)
	PYTHONPATH=$(CURDIR) $(BIN)/python soak/run_soak.py --sessions $(SOAK_SESSIONS) --duration $(SOAK_SECONDS)

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[bench]'
	touch $@

# ketch's server next to pyftpdlib, vsftpd and pure-ftpd (unpacked under bench/.peers/);
# tables of medians and ketch/peer ratios, saved under bench/results/ (latest.md: the last run).
bench: $(BENCH_STAMP)
	scripts/install-debian-packages curl
	scripts/fetch-peer-servers bench/.peers
	PYTHONPATH=$(CURDIR) $(BIN)/python bench/run_bench.py --rounds $(BENCH_ROUNDS) --size-mib $(BENCH_SIZE) \
	    --only '$(BENCH_ONLY)' --servers '$(BENCH_SERVERS)'

# The sessions scenario beside bench/floor_server.py, the least any Python server on uvloop
# spends per session: what the CPU-per-session figures of ketch and pyftpdlib are made of.
bench-floor: $(BENCH_STAMP)
	PYTHONPATH=$(CURDIR) $(BIN)/python bench/run_bench.py --rounds $(BENCH_ROUNDS) \
	    --only sessions --servers ketch,pyftpdlib,floor

# Two ketch source trees (each a folder holding ketch/) in alternating rounds of the sessions
# workload: server CPU per session, B against A. For a change to the session path:
# cp -r src /tmp/before first, then make bench-ab BENCH_A=/tmp/before.
BENCH_A ?=
BENCH_B ?= src
BENCH_AB_ROUNDS ?= 8
bench-ab: $(BENCH_STAMP)
	@test -n "$(BENCH_A)" || { echo "make bench-ab: set BENCH_A to the source tree to compare with (e.g. a copy of src/ made before the change)"; exit 2; }
	PYTHONPATH=$(CURDIR) $(BIN)/python bench/ab_sessions.py --a $(BENCH_A) --b $(BENCH_B) \
	    --rounds $(BENCH_AB_ROUNDS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .peers bench/.peers bench/.data
