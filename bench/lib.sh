# Shared by the bench scripts (sourced, not run): a scratch folder and the processes started,
# both cleaned up on exit; a free local port; Redis under callgrind; one electiond.

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# A private redis-server under callgrind, counting only inside FCALL and EVALSHA (networking
# and parsing left out), its profile written to $1. Sets rport and redis_pid.
start_counted_redis() {
  rport=$(free_port)
  valgrind --tool=callgrind --callgrind-out-file="$1" \
    --toggle-collect=fcallCommand --toggle-collect=evalShaCommand \
    redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no \
    >"$1.log" 2>&1 &
  redis_pid=$!
  pids+=("$redis_pid")
  until redis-cli -p "$rport" ping >/dev/null 2>&1; do sleep 0.2; done
}

# electiond $1 against that Redis, with any further VAR=value settings. Sets gport and
# replica_pid.
start_replica() {
  local bin=$1
  shift
  gport=$(free_port)
  env ELECTION_REDIS_URL="redis://127.0.0.1:$rport" ELECTION_LISTEN_ADDR="127.0.0.1:$gport" \
    ELECTION_METRICS_ADDR= ELECTION_LOG_LEVEL=warn "$@" "$bin" 2>>"$work/electiond.log" &
  replica_pid=$!
  pids+=("$replica_pid")
  until (echo >"/dev/tcp/127.0.0.1/$gport") 2>/dev/null; do sleep 0.2; done
}
