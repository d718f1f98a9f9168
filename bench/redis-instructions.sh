#!/usr/bin/env bash
# Instructions Redis executes per operation, counted by valgrind's callgrind: repeatable on a
# shared, noisy machine, where microseconds are not. Runs a private redis-server under
# callgrind (collecting only inside FCALL and EVALSHA, so networking and parsing are left out),
# one electiond against it, and election-bench's reads (GetTerm) and then writes (Enter and
# Withdraw alternating) through that replica with no straight-on-Redis baseline. Prints the
# instructions per call of each.
#
#   bench/redis-instructions.sh [path/to/electiond]     (default: target/release/electiond)
#
# Needs valgrind (apt-get install -y valgrind) and a release build (cargo build --release).
# Pass an older build's electiond to compare before and after a change.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/electiond}
BENCH=target/release/election-bench
SECONDS_PER_RUN=${SECONDS_PER_RUN:-5}
. bench/lib.sh

for scenario in reads writes; do
  start_counted_redis "$work/cg.$scenario"
  start_replica "$BIN"
  "$BENCH" --targets "127.0.0.1:$gport" --redis-url "redis://127.0.0.1:$rport" \
    --scenarios "$scenario" --no-baseline --duration "$SECONDS_PER_RUN" \
    --clients 8 --connections 2 --elections 50 --json >"$work/bench.$scenario.json" 2>/dev/null
  kill "$replica_pid"
  calls=$(redis-cli -p "$rport" info commandstats | tr -d '\r' |
    sed -n 's/^cmdstat_\(fcall\|evalsha\):calls=\([0-9]*\),.*/\2/p' | awk '{s+=$1} END {print s+0}')
  redis-cli -p "$rport" shutdown nosave >/dev/null 2>&1 || true
  wait "$redis_pid" 2>/dev/null || true
  total=$(sed -n 's/^totals: *//p' "$work/cg.$scenario" | head -1)
  echo "$scenario: $calls calls inside Redis, $((total / calls)) instructions per call"
done
