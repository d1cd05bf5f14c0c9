#!/usr/bin/env bash
# Batch import throughput: generates a CSV of ROWS people (a HR/PACS export with a column
# mapping, one bad row in a thousand) and times `scimhub import` (release build) into a
# fresh database: SQLite by default, or PostgreSQL when a postgres:// URL of a server
# database is given (a fresh database is created next to it). Prints the import summary,
# whose rows/s is the figure.
# Usage: scripts/bench-import.sh [DATABASE_URL] [ROWS] [JOBS]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
rows=${2:-100000}
cargo build --release --bin scimhub
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
case "${1:-sqlite}" in
  postgres*)
    name="scimhub_bench_import_$$"
    PGOPTIONS="-c client_min_messages=warning" psql "$1" -qc "CREATE DATABASE $name"
    trap 'rm -rf "$work"; PGOPTIONS="-c client_min_messages=warning" psql "$1" -qc "DROP DATABASE IF EXISTS $name"' EXIT
    db="${1%/*}/$name" ;;
  *) db="sqlite://$work/bench.db?mode=rwc" ;;
esac
pacs=urn:scimhub:params:scim:schemas:extension:pacs:1.0:Cardholder
cat >"$work/mapping.json" <<JSON
{"columns": {"employee_id": "externalId", "login": "userName", "first": "name.givenName",
 "last": "name.familyName", "mail": "emails[type eq \"work\"].value",
 "badge": "$pacs:cardNumber", "level": "$pacs:issueLevel", "status": "$pacs:pivStatus",
 "sites": "$pacs:facilities", "expires": "$pacs:cardExpiry", "active": "active",
 "dept": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"}}
JSON
python3 - "$rows" >"$work/people.csv" <<'PY'
import sys
n = int(sys.argv[1])
print("employee_id,login,first,last,mail,badge,level,status,sites,expires,active,dept")
for i in range(n):
    level = "high" if i % 1000 == 999 else str(i % 5)
    print(f"E{i},user{i},First{i},\"Last, {i}\",user{i}@example.com,B{i},{level},active,"
          f"HQ;Annex,2030-01-31T00:00:00Z,true,Dept{i % 10}")
PY
export SCIMHUB_DATABASE_URL=$db SCIMHUB_LOG__LEVEL=warn
echo "database: ${db%%\?*}, $rows rows"
jobs=()
[ -n "${3:-}" ] && jobs=(--jobs "$3")
# Failed rows make the command exit non-zero; the report goes to a file.
target/release/scimhub import "$work/people.csv" --mapping "$work/mapping.json" \
  --report "$work/report.txt" --quiet "${jobs[@]}" || true
echo "failed rows reported: $(wc -l <"$work/report.txt") (first: $(head -1 "$work/report.txt"))"
