#!/usr/bin/env bash
# Instructions the replica executes per call, counted by valgrind's callgrind (repeatable on a
# shared, noisy machine, where microseconds are not), with and without credentials. Runs a
# private redis-server, then for each mode one electiond under callgrind, warms it up, zeroes
# the counters, and drives election-bench's reads (GetTerm without a client id) and writes
# (Enter and Withdraw alternating, as the call's own client) through it. Prints the replica's
# instructions per call of each.
#
#   bench/replica-instructions.sh [path/to/electiond]     (default: target/release/electiond)
#   MODES="off tokens" bench/replica-instructions.sh path/to/an/older/electiond
#   MODES="off floor" KEEP=profiles bench/replica-instructions.sh
#
# Modes: `off` (no credentials anywhere), `tokens` (ELECTION_AUTH_TOKENS, the token sent with
# each call: what an older build also takes), `file` (an access file of 20 grants; the bench's
# token is a worker's on every election, for every client `*`, so every call is allowed after
# the whole check), `floor` (not a replica: election-bench's floor server, the same tonic
# stack on the same runtime answering a fixed term with no storage, under the same calls).
# KEEP=dir keeps the callgrind profiles there (callgrind_annotate reads them). Needs valgrind
# and a release build (cargo build --release).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/electiond}
BENCH=target/release/election-bench
SECONDS_PER_RUN=${SECONDS_PER_RUN:-5}
. bench/lib.sh

rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no >"$work/redis.log" 2>&1 &
pids+=($!)
until redis-cli -p "$rport" ping >/dev/null 2>&1; do sleep 0.2; done

token=bench-token
sha() { printf %s "$1" | sha256sum | cut -d' ' -f1; }
for i in $(seq 1 19); do
  printf '[[grant]]\nname = "team-%s"\ntoken_sha256 = "%s"\nrole = "worker"\nelections = ["team-%s/*"]\nclients = ["w-%s-*"]\n\n' \
    "$i" "$(sha "token-$i")" "$i" "$i"
done >"$work/access.toml"
printf '[[grant]]\nname = "bench"\ntoken_sha256 = "%s"\nrole = "worker"\nelections = ["*"]\nclients = ["*"]\n' \
  "$(sha "$token")" >>"$work/access.toml"

# the calls the replica answered, from its metrics
calls() {
  curl -s "http://127.0.0.1:$mport/metrics" |
    awk '/^electiond_grpc_calls_total/ { s += $NF } END { print s + 0 }'
}

for mode in ${MODES:-off tokens file}; do
  for scenario in reads writes; do
    gport=$(free_port)
    mport=$(free_port)
    extra=()
    args=(--token "$token")
    case $mode in
      off) args=() ;;
      tokens) extra=(ELECTION_AUTH_TOKENS="$token") ;;
      file) extra=(ELECTION_ACCESS_FILE="$work/access.toml") ;;
    esac
    if [ "$mode" = floor ]; then
      valgrind --tool=callgrind --callgrind-out-file="$work/cg.$mode.$scenario" \
        "$BENCH" --serve-floor "127.0.0.1:$gport" 2>>"$work/electiond.log" &
    else
      env ELECTION_REDIS_URL="redis://127.0.0.1:$rport" ELECTION_LISTEN_ADDR="127.0.0.1:$gport" \
        ELECTION_METRICS_ADDR="127.0.0.1:$mport" ELECTION_LOG_LEVEL=warn \
        ELECTION_KEY_PREFIX="bench-$mode-$scenario" "${extra[@]}" \
        valgrind --tool=callgrind --callgrind-out-file="$work/cg.$mode.$scenario" "$BIN" \
        2>>"$work/electiond.log" &
    fi
    replica_pid=$!
    pids+=("$replica_pid")
    until (echo >"/dev/tcp/127.0.0.1/$gport") 2>/dev/null; do sleep 0.2; done
    run() {
      "$BENCH" --targets "127.0.0.1:$gport" --redis-url "redis://127.0.0.1:$rport" \
        --scenarios "$scenario" --no-baseline --duration "$1" --clients 8 --connections 2 \
        --elections 50 "${args[@]}" --json 2>/dev/null
    }
    # the bench's own count of the calls it made (the floor has no metrics)
    counted() { python3 -c 'import json,sys; print(sum(l["grpc"]["count"] for l in json.load(sys.stdin)["loads"]))'; }
    run 1 >/dev/null
    # the two scrapes lie outside what is counted
    [ "$mode" = floor ] || before=$(calls)
    callgrind_control -z "$replica_pid" >/dev/null 2>&1
    made=$(run "$SECONDS_PER_RUN" | counted)
    callgrind_control -d "$replica_pid" >/dev/null 2>&1
    if [ "$mode" = floor ]; then n=$made; else n=$(($(calls) - before)); fi
    dump=$(ls -t "$work/cg.$mode.$scenario".[0-9]* | head -1)
    kill "$replica_pid"
    wait "$replica_pid" 2>/dev/null || true
    total=$(sed -n 's/^totals: *//p' "$dump" | head -1)
    if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp "$dump" "$KEEP/callgrind.$mode.$scenario"; fi
    echo "$mode, $scenario: $n calls, $((total / n)) instructions per call in the server"
  done
done
