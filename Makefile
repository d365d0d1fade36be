# ketch: `make run` serves a directory, `make test` installs what the tests need and runs them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ROOT   ?= .
# Debian packages the tests drive as real FTP peers (curl, lftp) or build network
# labs with (iproute2, nftables). The FTP servers the client is
# tested against (vsftpd, pure-ftpd) conflict as packages: scripts/fetch-peer-servers
# unpacks them under .peers/ and installs the libraries they need.
TEST_DEBIAN_PACKAGES := curl lftp iproute2 nftables

.PHONY: run test check lint typecheck pytest clean

$(STAMP): pyproject.toml
	scripts/make-venv $(PYTHON) $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

run: $(STAMP)
	$(BIN)/ketch serve --root $(ROOT)

test: $(STAMP)
	scripts/install-debian-packages $(TEST_DEBIAN_PACKAGES)
	scripts/fetch-peer-servers .peers
	$(MAKE) --no-print-directory lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests

typecheck: $(STAMP)
	$(BIN)/mypy --strict src

pytest: $(STAMP)
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .peers
