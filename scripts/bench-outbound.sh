#!/usr/bin/env bash
# Outbound provisioning benchmarks, with scimhub instances as consumers (release builds,
# SQLite): (1) write acknowledged -> consumer created latency under steady load, (2) the time
# to provision N users to a fresh consumer, next to (3) that consumer's own ingest rate
# measured by the same tool with the same concurrency.
# Usage: scripts/bench-outbound.sh [USERS] [RATE]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
users=${1:-100000}
rate=${2:-50}
cargo build --release --bin scimhub --bin conformance
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
bin=target/release/scimhub
c=target/release/conformance
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start NAME: a hub on its own SQLite file; prints "URL TOKEN ADMIN"
start() {
  local name=$1 p
  p=$(port)
  export SCIMHUB_DATABASE_URL="sqlite://$work/$name.db?mode=rwc"
  local t
  t=$($bin token create --name bench --scope admin)
  SCIMHUB_HTTP_ADDR=127.0.0.1:$p SCIMHUB_LDAP__ENABLED=false SCIMHUB_LOG__LEVEL=warn \
    SCIMHUB_OUTBOUND__POLL_INTERVAL_MS=200 $bin serve >"$work/$name.log" 2>&1 &
  for _ in $(seq 1 100); do curl -fs -o /dev/null -H "Authorization: Bearer $t" "http://127.0.0.1:$p/scim/v2/ServiceProviderConfig" && break; sleep 0.1; done
  echo "http://127.0.0.1:$p/scim/v2 $t http://127.0.0.1:$p"
}

add_consumer() { # HUB_ADMIN HUB_TOKEN NAME URL TOKEN
  curl -fs -o /dev/null -X POST "$1/admin/api/v1/consumers" -H "Authorization: Bearer $2" -H 'Content-Type: application/json' \
    -d "{\"name\": \"$3\", \"endpoint\": {\"base_url\": \"$4\", \"auth\": {\"type\": \"bearer\", \"token\": \"$5\"}}, \"spec\": {\"concurrency\": 16, \"resource_types\": [\"User\"]}}"
}

read -r A_URL A_TOK A_ADMIN <<<"$(start hub)"
read -r B_URL B_TOK _ <<<"$(start steady)"
add_consumer "$A_ADMIN" "$A_TOK" steady "$B_URL" "$B_TOK"
echo "== delivery latency (hub -> consumer hub), steady load"
$c load delivery --url "$A_URL" --token "$A_TOK" --downstream "$B_URL" --downstream-token "$B_TOK" --users 1000 --rate "$rate"
curl -fs -o /dev/null -X DELETE "$A_ADMIN/admin/api/v1/consumers/steady" -H "Authorization: Bearer $A_TOK"

echo "== provisioning $users users to a fresh consumer"
$c load seed --url "$A_URL" --token "$A_TOK" --users "$users"
read -r C_URL C_TOK _ <<<"$(start fresh)"
add_consumer "$A_ADMIN" "$A_TOK" fresh "$C_URL" "$C_TOK"
$c load wait-for --downstream "$C_URL" --downstream-token "$C_TOK" --users "$users"

echo "== the consumer's own ingest rate (same tool, 16 clients, one POST per user)"
read -r D_URL D_TOK _ <<<"$(start ingest)"
$c load creates --url "$D_URL" --token "$D_TOK" --users "$users" --concurrency 16
