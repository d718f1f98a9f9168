#!/usr/bin/env bash
# What one operation on a big election costs Redis, operation by operation, in instructions
# (callgrind: repeatable on a noisy machine, where microseconds are not; `election-bench
# --scenarios big` gives the time). While a function runs, every other election on that Redis
# waits.
#
# Starts a private redis-server under callgrind (collecting only inside FCALL and EVALSHA), one
# electiond against it with leases of an hour (so nothing expires mid-run), restores one
# election of CANDIDATES - CALLS candidates with 28-byte ids (so that the Enters bring it to
# CANDIDATES, the default limit), then makes CALLS calls of each kind with
# electionctl, each kind on its own: GetTerm (through a replica started for the call, then
# through the one that holds the election's last state), Enter of a new candidate (appended
# at the end), Withdraw of those again, Evict, Promote and Anoint of candidates in the middle.
#
#   bench/big-election.sh [path/to/electiond]     (default: target/release/electiond)
#   CANDIDATES=10000 CALLS=20 bench/big-election.sh
#
# Needs valgrind and a release build (cargo build --release). Pass an older build's electiond
# to compare before and after a change.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/electiond}
CTL=target/release/electionctl
N=${CANDIDATES:-10000}
CALLS=${CALLS:-20}
. bench/lib.sh

start_counted_redis "$work/cg"
start_replica "$BIN" ELECTION_LEASE_TTL_MS=3600000 ELECTION_REDIS_TIMEOUT_MS=30000
port=$gport
ctl() { "$CTL" --endpoints "127.0.0.1:$port" --timeout 60s "$@" >/dev/null; }
id() { printf 'candidate-%05d-of-the-fleet' "$1"; }

python3 -c "
import json
ids = ['candidate-%05d-of-the-fleet' % i for i in range($N - $CALLS)]
print(json.dumps({'id': 1, 'leader': ids[0], 'candidates': ids}))" | ctl restore big
echo "one election of $((N - CALLS)) candidates ($(redis-cli -p "$rport" --scan --pattern '*big*' |
  while read -r k; do [ "$(redis-cli -p "$rport" type "$k")" = string ] &&
    redis-cli -p "$rport" strlen "$k"; done) bytes stored), $CALLS calls each"

dumps=0
phase() {
  local name=$1
  shift
  callgrind_control -z "$redis_pid" >/dev/null 2>&1
  for i in $(seq 1 "$CALLS"); do "$@" "$i"; done
  callgrind_control -d "$redis_pid" >/dev/null 2>&1
  dumps=$((dumps + 1))
  local total
  total=$(sed -n 's/^totals: *//p' "$work/cg.$dumps" | head -1)
  printf '%-40s %10d instructions per call\n' "$name" $((total / CALLS))
}
get() { ctl get big; }
# a replica that has not seen the election yet: one started for the call
get_fresh() {
  start_replica "$BIN" ELECTION_LEASE_TTL_MS=3600000 ELECTION_REDIS_TIMEOUT_MS=30000
  "$CTL" --endpoints "127.0.0.1:$gport" --timeout 60s get big >/dev/null
  kill "$replica_pid"
  wait "$replica_pid" 2>/dev/null || true
}
enter() { ctl enter --id "$(id $((N - CALLS - 1 + $1)))" big; }
withdraw() { ctl withdraw --id "$(id $((N - CALLS - 1 + $1)))" big; }
evict() { ctl evict big "$(id $((N / 2 + $1)))"; }
promote() { ctl promote big "$(id $((N / 4 + $1 * 2)))"; }
anoint() { ctl anoint big "$(id $((N / 4 * 3 + $1)))"; }

phase "GetTerm, on a replica new to it" get_fresh
phase "GetTerm, on the replica that holds it" get
phase "Enter (appended at the end)" enter
phase "Withdraw (the last ones)" withdraw
phase "Evict (from the middle)" evict
phase "Promote (in the middle)" promote
phase "Anoint (from the middle)" anoint
