#!/usr/bin/env bash
# The project's test command: formatting, lints, every test on SQLite and then on
# PostgreSQL, and the third-party SCIM compliance tools against the built binary on both.
# On a fresh machine it installs what the tests need: Debian packages (as root) and a
# Python venv with the pinned tools of scripts/requirements-test.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${SCIMHUB_VENV:-.venv}
pg_url=${SCIMHUB_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
export SCIMHUB_TEST_PG_URL=$pg_url

step() { printf '\n== %s\n' "$*"; }

step "system packages"
missing=()
command -v ldapsearch >/dev/null || missing+=(ldap-utils)
command -v psql >/dev/null || missing+=(postgresql-client)
command -v openssl >/dev/null || missing+=(openssl)
command -v curl >/dev/null || missing+=(curl)
# The admin web UI's browser test drives headless Chromium through chromedriver.
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "missing Debian packages: ${missing[*]} (run as root or install them)"; exit 1
  fi
fi
echo ok

step "python tools ($venv)"
if ! "$venv/bin/pip" freeze 2>/dev/null | grep -qx 'scim-sanity==0.7.4'; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r scripts/requirements-test.txt
fi
export SCIMHUB_TEST_PYTHON="$PWD/$venv/bin/python"
echo ok

step "postgresql"
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
  for _ in $(seq 1 50); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.2; done
fi
# Databases left by earlier runs.
PGOPTIONS="-c client_min_messages=warning" psql "$pg_url" -Atc \
  "SELECT datname FROM pg_database WHERE datname LIKE 'scimhub\_test\_%' OR datname LIKE 'scimhub\_tp\_%'" |
  while read -r d; do PGOPTIONS="-c client_min_messages=warning" psql "$pg_url" -qc "DROP DATABASE IF EXISTS \"$d\""; done
echo ok

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

step "build"
cargo build --workspace --all-targets

run_tests() {
  if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast --status-level fail --final-status-level slow
  else
    cargo test --workspace --no-fail-fast
  fi
}

step "tests on SQLite"
SCIMHUB_TEST_DB=sqlite run_tests

step "tests on PostgreSQL"
SCIMHUB_TEST_DB=postgres run_tests

step "third-party SCIM compliance tools on SQLite"
scripts/third-party-scim.sh "sqlite://" "$venv"

step "third-party SCIM compliance tools on PostgreSQL"
scripts/third-party-scim.sh "$pg_url" "$venv"

step "all passed"
