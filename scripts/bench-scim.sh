#!/usr/bin/env bash
# SCIM benchmarks: creates/s with concurrent clients, `userName eq` latency at 10k and 1M
# users, and adding one member to a 10-member vs a 100k-member group. Starts a release
# build of the hub on a fresh database (SQLite by default; pass a postgres:// URL of a
# server database to use PostgreSQL: a fresh database is created next to it).
# Usage: scripts/bench-scim.sh [DATABASE_URL] [POPULATIONS]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
populations=${2:-10000,1000000}
cargo build --release --bin scimhub --bin conformance
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
case "${1:-sqlite}" in
  postgres*)
    name="scimhub_bench_$$"
    PGOPTIONS="-c client_min_messages=warning" psql "$1" -qc "CREATE DATABASE $name"
    trap 'kill $(jobs -p) 2>/dev/null || true; wait; rm -rf "$work"; PGOPTIONS="-c client_min_messages=warning" psql "$1" -qc "DROP DATABASE IF EXISTS $name"' EXIT
    db="${1%/*}/$name" ;;
  *) db="sqlite://$work/bench.db?mode=rwc" ;;
esac
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export SCIMHUB_DATABASE_URL=$db SCIMHUB_HTTP_ADDR=127.0.0.1:$port SCIMHUB_LOG__LEVEL=warn
token=$(target/release/scimhub token create --name bench --scope admin)
target/release/scimhub serve >"$work/hub.log" 2>&1 &
url=http://127.0.0.1:$port/scim/v2
for _ in $(seq 1 100); do curl -fs -o /dev/null -H "Authorization: Bearer $token" "$url/ServiceProviderConfig" && break; sleep 0.1; done
echo "database: ${db%%\?*}"
c=target/release/conformance
$c load creates --url "$url" --token "$token" --users 5000 --concurrency 16
$c load lookup --url "$url" --token "$token" --populations "$populations" --queries 5000 --concurrency 16
$c load members --url "$url" --token "$token" --sizes 10,100000 --samples 200
