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
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

for scenario in reads writes; do
  rport=$(free_port)
  valgrind --tool=callgrind --callgrind-out-file="$work/cg.$scenario" \
    --toggle-collect=fcallCommand --toggle-collect=evalShaCommand \
    redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no \
    >"$work/redis.$scenario.log" 2>&1 &
  redis_pid=$!
  pids+=("$redis_pid")
  until redis-cli -p "$rport" ping >/dev/null 2>&1; do sleep 0.2; done
  gport=$(free_port)
  ELECTION_REDIS_URL="redis://127.0.0.1:$rport" ELECTION_LISTEN_ADDR="127.0.0.1:$gport" \
    ELECTION_METRICS_ADDR= ELECTION_LOG_LEVEL=warn "$BIN" 2>>"$work/electiond.log" &
  replica_pid=$!
  pids+=("$replica_pid")
  until (echo >"/dev/tcp/127.0.0.1/$gport") 2>/dev/null; do sleep 0.2; done
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
