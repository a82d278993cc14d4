#!/usr/bin/env bash
# The quickstart: a controller, and two demo services foo and bar, each with its sidecar proxy, as
# plain processes on loopback. foo calls bar through foo's proxy (explicit mode: foo's app sends
# its calls to 127.0.0.1:4140), across mutual TLS to bar's proxy, and on to bar.
#
#   examples/quickstart/run.sh            # run until Ctrl-C
#   examples/quickstart/run.sh --check    # start, send a few requests, stop (exit 0 on success)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${WEFT_BIN_DIR:-$root/target/x86_64-unknown-linux-gnu/release}
for b in weft weft-controller weft-proxy weft-demo; do
  [ -x "$bin/$b" ] || { echo "missing $bin/$b: run 'cargo build --release --workspace' first" >&2; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/weft-quickstart.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

start() { # name, command...
  local name=$1; shift
  "$@" >"$work/$name.log" 2>&1 &
  pids+=($!)
}

wait_ready() { # url
  for _ in $(seq 1 200); do
    "$bin/weft-proxy" probe "$1" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "not ready: $1 (logs in $work)" >&2
  tail -n 20 "$work"/*.log >&2
  return 1
}

"$bin/weft" ca init --dir "$work/ca" --trust-domain weft.local 2>/dev/null
cp "$here/mesh.yaml" "$work/mesh.yaml"
"$bin/weft" ca token --dir "$work/ca" --service foo >"$work/foo.token"
"$bin/weft" ca token --dir "$work/ca" --service bar >"$work/bar.token"

start controller "$bin/weft-controller" --mesh "$work/mesh.yaml" --ca-dir "$work/ca" \
  --grpc-addr 127.0.0.1:7070 --admin-addr 127.0.0.1:7071
wait_ready http://127.0.0.1:7071/ready

common=(--controller https://127.0.0.1:7070 --trust-anchor "$work/ca/ca.crt")
start bar "$bin/weft-demo" --name bar --listen 127.0.0.1:8081
start bar-proxy "$bin/weft-proxy" "${common[@]}" --token-file "$work/bar.token" --service bar \
  --app 127.0.0.1:8081 --inbound 127.0.0.1:4143 --admin 127.0.0.1:4191
start foo "$bin/weft-demo" --name foo --listen 127.0.0.1:8080 --call http://127.0.0.1:4140/
start foo-proxy "$bin/weft-proxy" "${common[@]}" --token-file "$work/foo.token" --service foo \
  --app 127.0.0.1:8080 --inbound 127.0.0.1:4144 --admin 127.0.0.1:4192 --upstream bar=127.0.0.1:4140
wait_ready http://127.0.0.1:4191/ready
wait_ready http://127.0.0.1:4192/ready

cat <<TXT
The quickstart mesh is up (logs and the mesh file in $work):

  curl -s http://127.0.0.1:8080/ | python3 -m json.tool   # foo, which calls bar through the mesh
  $bin/weft status                                         # the mesh at a glance
  curl -s http://127.0.0.1:4191/metrics | grep weft_requests_total   # bar's proxy: tls="true", client_id=foo
  \$EDITOR $work/mesh.yaml                                 # change policy live

TXT

if [ "${1:-}" = "--check" ]; then
  for i in 1 2 3; do
    out=$("$bin/weft-proxy" probe http://127.0.0.1:8080/ 2>&1) || { echo "request $i failed: $out" >&2; exit 1; }
  done
  "$bin/weft" status
  metrics=$(curl -s http://127.0.0.1:4191/metrics 2>/dev/null || true)
  echo "$metrics" | grep 'weft_requests_total{direction="inbound"' || true
  echo "quickstart check passed"
  exit 0
fi
echo "Press Ctrl-C to stop."
wait
