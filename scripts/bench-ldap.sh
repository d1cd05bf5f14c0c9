#!/usr/bin/env bash
# LDAP benchmark: searches/s with 16 connections for a white-pages lookup `(uid=X)` and the
# address-book query `(|(cn=*X*)(mail=*X*))`, against scimhub's directory (release build,
# SQLite, users seeded over SCIM) and, side by side, OpenLDAP slapd (back_mdb, `index uid eq`)
# loaded with slapadd from an LDIF file of the same users with the same attribute values.
# slapd comes from the Debian package `slapd`, installed when missing if run as root.
# Usage: scripts/bench-ldap.sh [USERS]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
users=${1:-100000}
connections=16
seconds=10
base=dc=example,dc=org

if [ ! -x /usr/sbin/slapd ] || [ ! -x /usr/sbin/slapadd ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "slapd is not installed: apt-get install -y slapd ldap-utils (as root)" >&2
    exit 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y slapd ldap-utils
  # The package starts the system's slapd where services may start; this benchmark runs its
  # own instance, and one on port 389 left behind would outlive the run.
  if command -v systemctl >/dev/null && systemctl is-active --quiet slapd 2>/dev/null; then
    systemctl stop slapd
  elif [ -s /run/slapd/slapd.pid ] && kill -0 "$(cat /run/slapd/slapd.pid)" 2>/dev/null; then
    kill "$(cat /run/slapd/slapd.pid)"
  fi
fi

cargo build --release --bin scimhub --bin conformance
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
bin=target/release/scimhub
c=target/release/conformance
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# listening PORT: waits up to 10 s for a TCP listener on 127.0.0.1:PORT.
listening() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on 127.0.0.1:$1" >&2
  return 1
}

echo "== scimhub: seeding $users users over SCIM"
hp=$(port)
lp=$(port)
export SCIMHUB_DATABASE_URL="sqlite://$work/hub.db?mode=rwc" SCIMHUB_LOG__LEVEL=warn
token=$($bin token create --name bench --scope admin)
password=$($bin ldap-account create --name bench)
SCIMHUB_HTTP_ADDR=127.0.0.1:$hp SCIMHUB_LDAP_ADDR=127.0.0.1:$lp $bin serve >"$work/hub.log" 2>&1 &
listening "$hp"
listening "$lp"
$c load seed --url "http://127.0.0.1:$hp/scim/v2" --token "$token" --users "$users"

echo "== slapd: loading the same users with slapadd"
$c load ldif --users "$users" --base-dn "$base" --output "$work/users.ldif"
mkdir "$work/mdb"
cat >"$work/slapd.conf" <<EOF
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
pidfile $work/slapd.pid
modulepath /usr/lib/ldap
moduleload back_mdb
database mdb
maxsize 4294967296
suffix "$base"
rootdn "cn=admin,$base"
rootpw secret
directory $work/mdb
index objectClass eq
index uid eq
EOF
started=$(date +%s%N)
/usr/sbin/slapadd -q -f "$work/slapd.conf" -l "$work/users.ldif"
echo "slapadd: $users users in $(( ($(date +%s%N) - started) / 1000000 )) ms"
sp=$(port)
# Any debug level keeps slapd in the foreground, so that its PID is this job's.
/usr/sbin/slapd -f "$work/slapd.conf" -h "ldap://127.0.0.1:$sp/" -d 0 >"$work/slapd.log" 2>&1 &
listening "$sp"

measure() { # NAME URL BIND_DN PASSWORD
  echo "== $1: $connections connections, $seconds s per query; load average $(cut -d' ' -f1-3 /proc/loadavg)"
  LDAP_PASSWORD=$4 $c load ldap --url "$2" --bind-dn "$3" --base-dn "$base" --users "$users" \
    --connections "$connections" --seconds "$seconds" | tee "$work/$1.out"
}
measure scimhub "ldap://127.0.0.1:$lp" "cn=bench,ou=services,$base" "$password"
measure slapd "ldap://127.0.0.1:$sp" "cn=admin,$base" secret
echo "load average after the runs: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) CPUs)"

# figures NAME LABEL: "searches/s p50 p99" from a `conformance load ldap` line.
figures() {
  grep -F "$2 at" "$work/$1.out" |
    sed -E 's#.*= ([0-9]+)/s; latency p50 ([0-9.]+) ms, p99 ([0-9.]+) ms.*#\1 \2 \3#'
}
echo
echo "$users users, $connections connections, $seconds s per figure:"
echo "| query | scimhub searches/s | p50 ms | p99 ms | slapd searches/s | p50 ms | p99 ms |"
echo "|---|---|---|---|---|---|---|"
for q in '(uid=X)' '(|(cn=*X*)(mail=*X*))'; do
  read -r a1 a2 a3 <<<"$(figures scimhub "$q")"
  read -r b1 b2 b3 <<<"$(figures slapd "$q")"
  echo "| \`$q\` | $a1 | $a2 | $a3 | $b1 | $b2 | $b3 |"
done
