#!/usr/bin/env bash
# Runs the third-party SCIM compliance tools against a freshly started scimhub:
#   scim2-tester (python-scim's `scim2 ... test`) and `scim-sanity probe`.
# Usage: scripts/third-party-scim.sh DATABASE_URL [PYTHON_VENV]
# Each tool gets a fresh database: scim2-tester's checks assume it sees every resource on
# the first page. Exits non-zero on any failure.
set -euo pipefail
db_url=${1:?database URL}
venv=${2:-.venv}
root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/target/debug/scimhub"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

fresh_db() {
  case "$db_url" in
    sqlite:*) echo "sqlite://$work/$1.db?mode=rwc" ;;
    postgres*)
      local name="scimhub_tp_${1}_$$"
      PGOPTIONS="-c client_min_messages=warning" psql "${db_url%/*}/postgres" -qc "DROP DATABASE IF EXISTS $name" -c "CREATE DATABASE $name" >/dev/null
      echo "${db_url%/*}/$name" ;;
  esac
}

# start_hub NAME [ENV=VALUE...]: starts a hub on a fresh database; sets URL and TOKEN.
start_hub() {
  local name=$1; shift
  local db port
  db=$(fresh_db "$name")
  port=$(free_port)
  env "$@" SCIMHUB_DATABASE_URL="$db" "$bin" token create --name "$name" --scope admin >"$work/$name.token" 2>/dev/null
  # Hubs run side by side: each LDAP listener on a port of its own.
  env "$@" SCIMHUB_DATABASE_URL="$db" SCIMHUB_HTTP_ADDR="127.0.0.1:$port" SCIMHUB_LDAP_ADDR=127.0.0.1:0 \
    "$bin" serve >"$work/$name.log" 2>&1 &
  URL="http://127.0.0.1:$port/scim/v2"
  TOKEN=$(cat "$work/$name.token")
  for _ in $(seq 1 100); do
    curl -fs -o /dev/null -H "Authorization: Bearer $TOKEN" "$URL/ServiceProviderConfig" && return 0
    sleep 0.1
  done
  echo "scimhub did not start:"; cat "$work/$name.log"; exit 1
}

status=0

# scim2-tester fills every writable dateTime attribute with a random UUID string (which its
# own models then reject) and its PATCH-add check on multi-valued extension attributes
# cannot pass on an RFC-conformant server, so it runs against a hub that does not serve the
# PACS extension; scim-sanity runs against the default configuration.
start_hub tester SCIMHUB_SCIM__BUILTIN_EXTENSIONS=enterprise
"$venv/bin/scim2" --url "$URL" -h "Authorization: Bearer $TOKEN" test >"$work/scim2.out" 2>&1 || true
total=$(grep -cE '^(SUCCESS|ERROR|SKIPPED|WARNING|FAILURE|CRITICAL)' "$work/scim2.out" || true)
bad=$(grep -E '^(ERROR|SKIPPED|WARNING|FAILURE|CRITICAL)' "$work/scim2.out" || true)
if [ "$total" -eq 0 ] || [ -n "$bad" ]; then
  echo "scim2-tester: FAILED ($total results)"; cat "$work/scim2.out"; status=1
else
  echo "scim2-tester: $total checks, 0 failures"
fi

start_hub sanity
"$venv/bin/scim-sanity" probe "$URL" --token "$TOKEN" --i-accept-side-effects --json-output >"$work/sanity.json" 2>"$work/sanity.err" || true
if python3 - "$work/sanity.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
s = r["summary"]
bad = [x for x in r["results"] if x["status"] in ("fail", "error")]
print(f"scim-sanity: {s['total']} results, {s['passed']} passed, {s['failed']} failed, {s['errors']} errors, {s['skipped']} skipped, {s['warnings']} warnings")
for x in bad:
    print(f"  {x['status']}: {x['name']}: {x['message']}")
sys.exit(1 if bad or s["total"] == 0 else 0)
PY
then :; else cat "$work/sanity.err"; status=1; fi
exit $status
