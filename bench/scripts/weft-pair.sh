# Sourced by the pair scripts: a controller with the benchmark's mesh policy, the built-in
# backend, and `start_proxies WRAPPER...` for a server-side and a client-side weft-proxy (one
# worker each; the wrapper, e.g. valgrind, may be empty). Needs BIN and the current directory set
# to an empty output folder; `controller_extra` (an array) adds controller flags. Sets CTL, SP and CP
# (the pids) and cleans up on exit. Ports are fixed (UPSTREAM is the client proxy's upstream
# listener, CLIENT_ADMIN its admin port); WEFT_PAIR_PORT_OFFSET shifts them all, so that two pairs
# can run side by side.

pids=()
off=${WEFT_PAIR_PORT_OFFSET:-0}
CTL_GRPC=$((17070 + off)) CTL_ADMIN=$((17071 + off)) BACKEND=$((18080 + off))
SERVER_INBOUND=$((14143 + off)) SERVER_ADMIN=$((14191 + off))
UPSTREAM=$((14140 + off)) CLIENT_INBOUND=$((14144 + off)) CLIENT_ADMIN=$((14192 + off))
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

"$BIN/weft" ca init --dir ca --trust-domain weft.local >/dev/null
# The benchmark's mesh file (bench/src/topology/weft.rs): the same policy the benchmark measures.
cat > mesh.yaml <<'YAML'
trust_domain: weft.local
services:
  bench-client:
    protocol: http
  bench-server:
    protocol: http
    allow: [bench-client]
    timeout: 5000ms
    retries:
      on: [5xx, reset, connect-failure]
      max_retries: 2
      per_try_timeout: 2000ms
      backoff: {base: 25ms, max: 250ms}
      budget: {ratio: 0.2, min_per_second: 10, window: 10s}
    circuit_breaker:
      max_connections: 1024
      max_requests: 1024
      max_pending: 0
      max_concurrent_retries: 3
      outlier: {consecutive_failures: 5, base_ejection: 30000ms, max_ejection: 300000ms, max_ejected_percent: 50}
YAML
"$BIN/weft" ca token --dir ca --service bench-client > client.token
"$BIN/weft" ca token --dir ca --service bench-server > server.token
"$BIN/weft-controller" --mesh mesh.yaml --ca-dir ca --grpc-addr 127.0.0.1:$CTL_GRPC --admin-addr 127.0.0.1:$CTL_ADMIN \
  --log-level warn ${controller_extra[@]+"${controller_extra[@]}"} > controller.log 2>&1 & CTL=$!; pids+=($CTL)
"$BIN/weft" bench backend --listen 127.0.0.1:$BACKEND --payload 1024 > backend.log 2>&1 & pids+=($!)
common=(--controller https://127.0.0.1:$CTL_GRPC --trust-anchor ca/ca.crt --workers 1 --log-level warn)

# start_proxies SERVER_WRAPPER... -- CLIENT_WRAPPER...
start_proxies() {
  local server_wrap=() client_wrap=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do server_wrap+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  client_wrap=("$@")
  ${server_wrap[@]+"${server_wrap[@]}"} "$BIN/weft-proxy" "${common[@]}" --token-file server.token \
    --service bench-server --instance bench-server --app 127.0.0.1:$BACKEND --inbound 127.0.0.1:$SERVER_INBOUND \
    --admin 127.0.0.1:$SERVER_ADMIN > server.log 2>&1 & SP=$!; pids+=($SP)
  ${client_wrap[@]+"${client_wrap[@]}"} "$BIN/weft-proxy" "${common[@]}" --token-file client.token \
    --service bench-client --instance bench-client --app 127.0.0.1:9 --upstream bench-server=127.0.0.1:$UPSTREAM \
    --inbound 127.0.0.1:$CLIENT_INBOUND --admin 127.0.0.1:$CLIENT_ADMIN > client.log 2>&1 & CP=$!; pids+=($CP)
}

# Waits until the pair answers through the client proxy's upstream listener.
wait_pair() {
  for _ in $(seq 1 120); do
    if "$BIN/weft" bench probe http://127.0.0.1:$UPSTREAM/ 2>/dev/null; then return 0; fi
    sleep 1
  done
  echo "the pair never answered; see $PWD/*.log" >&2
  exit 1
}
