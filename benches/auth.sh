#!/usr/bin/env bash
# What sign-in costs: `contact(email)` requests a second with wrk, side by side on one org,
# against one server at a time:
#   1. no authentication and no access log (--insecure-no-auth --no-access-log): the floor
#   2. no authentication, with the access log
#   3. a service token, without the access log
#   4. a service token, with the access log (how a script runs against idgraph)
#   5. a JWT from a real OpenID provider (tests/browser/oidc.mjs), with the access log
# and, after each, the access log's entries written and dropped (from /metrics).
# Targets: authentication <= 5% (3 vs 1), the access log <= 10% (2 vs 1, 4 vs 3), none dropped.
#
#   bash benches/auth.sh                  # CONTACTS=100000 DURATION=10s ROUNDS=3
set -euo pipefail
cd "$(dirname "$0")/.."
CONTACTS=${CONTACTS:-100000}
AGENTS=${AGENTS:-1000}
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-32}
SIM_PORT=${SIM_PORT:-18421}
PORT=${PORT:-18422}
IDP_PORT=${IDP_PORT:-18423}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release -q
BIN=target/release/idgraph
WORK=$(mktemp -d)
cleanup() { kill "${SERVE_PID:-}" "${SIM_PID:-}" "${IDP_PID:-}" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

echo "== simulator: $CONTACTS contacts, $AGENTS agents"
$BIN sim --port "$SIM_PORT" --contacts "$CONTACTS" --agents "$AGENTS" --token bench 2>"$WORK/sim.log" &
SIM_PID=$!
until curl -s -o /dev/null -H 'authorization: Bearer bench' "http://127.0.0.1:$SIM_PORT/users/1"; do sleep 0.3; done
$BIN crawl --drift-url "http://127.0.0.1:$SIM_PORT" --token bench --rate-limit 100000/s --data-dir "$WORK/data" 2>&1 | tail -1

JWT=""
if [ -d tests/browser/node_modules/oidc-provider ]; then
  node tests/browser/oidc.mjs "$IDP_PORT" "http://127.0.0.1:$PORT/auth/callback" bench-secret >"$WORK/idp.out" 2>/dev/null &
  IDP_PID=$!
  until [ -s "$WORK/idp.out" ]; do sleep 0.2; done
  JWT=$(curl -s "http://127.0.0.1:$IDP_PORT/mint?case=valid")
  printf 'bench-secret' >"$WORK/oidc-secret"
  cat >"$WORK/oidc.toml" <<TOML
[oidc]
issuer = "http://127.0.0.1:$IDP_PORT"
client_id = "idgraph"
client_secret_file = "$WORK/oidc-secret"
audience = "idgraph"
[oidc.roles]
auditor = ["idgraph-auditors"]
TOML
fi
echo "" >"$WORK/plain.toml"

{
  echo "emails = {"
  page=$(curl -s -H 'authorization: Bearer bench' "http://127.0.0.1:$SIM_PORT/contacts?limit=100")
  echo "$page" | grep -o '"email":"[^"]*"' | sed 's/"email":\("[^"]*"\)/  \1,/'
  echo "}"
} >"$WORK/emails.lua"

# contact.lua BEARER: the query, with this bearer token (none when empty).
lua() {
  cat <<LUA
dofile("$WORK/emails.lua")
local i = 0
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
local bearer = "$1"
if bearer ~= "" then wrk.headers["authorization"] = "Bearer " .. bearer end
request = function()
  i = i % #emails + 1
  return wrk.format(nil, "/graphql", nil, '{"query":"{ contact(email: \\\\"' .. emails[i] .. '\\\\") { owner { email status } } }"}')
end
bad = 0
response = function(status, headers, body)
  if status ~= 200 or not string.find(body, '"owner"') then bad = bad + 1 end
end
done = function(summary, latency, requests)
  io.write(string.format("%.0f %.2f %d\\n", summary.requests / (summary.duration / 1e6), latency:percentile(99) / 1000, bad))
end
LUA
}

# measure NAME CONFIG BEARER [serve flags...]: one server, ROUNDS runs of wrk; prints the median.
measure() {
  local name=$1 config=$2 bearer=$3
  shift 3
  $BIN serve --listen "127.0.0.1:$PORT" --drift-url "http://127.0.0.1:$SIM_PORT" --token bench \
    --full-every 6h --agents-every 6h --refresh-share 0 --config "$config" --data-dir "$WORK/data" "$@" \
    2>>"$WORK/serve.log" &
  SERVE_PID=$!
  until curl -sf -o /dev/null "http://127.0.0.1:$PORT/readyz"; do sleep 0.2; done
  lua "$bearer" >"$WORK/run.lua"
  wrk -t2 -c"$CONNS" -d2s -s "$WORK/run.lua" "http://127.0.0.1:$PORT/graphql" >/dev/null # warm-up
  local rates=()
  for _ in $(seq "$ROUNDS"); do
    out=$(wrk -t2 -c"$CONNS" -d"$DURATION" -s "$WORK/run.lua" "http://127.0.0.1:$PORT/graphql" | tail -1)
    rates+=("$out")
  done
  local m
  m=$(curl -s "http://127.0.0.1:$PORT/metrics")
  local written dropped
  written=$(echo "$m" | awk '/^idgraph_access_log_entries_total/ {print $2}')
  dropped=$(echo "$m" | awk '/^idgraph_access_log_dropped_total/ {print $2}')
  kill "$SERVE_PID"; wait "$SERVE_PID" 2>/dev/null || true
  printf '%s\n' "${rates[@]}" | sort -n | awk -v name="$name" -v w="${written:--}" -v d="${dropped:--}" \
    '{r[NR]=$1; p[NR]=$2; b+=$3} END {m=int((NR+1)/2); printf "%-44s %8.0f req/s (runs %s..%s), p99 %.2f ms, non-answers %d, log written %s dropped %s\n", name, r[m], r[1], r[NR], p[m], b, w, d}'
}

echo "== contact(email) { owner { email status } }: median of $ROUNDS runs of $DURATION, $CONNS connections"
measure "1 no auth, no access log" "$WORK/plain.toml" "" --insecure-no-auth --no-access-log
measure "2 no auth, access log" "$WORK/plain.toml" "" --insecure-no-auth
TOKEN=$($BIN token create bench --role auditor --data-dir "$WORK/data" 2>/dev/null)
measure "3 service token, no access log" "$WORK/plain.toml" "$TOKEN" --no-access-log
measure "4 service token, access log" "$WORK/plain.toml" "$TOKEN"
if [ -n "$JWT" ]; then
  measure "5 JWT (oidc-provider), access log" "$WORK/oidc.toml" "$JWT"
else
  echo "5 JWT: skipped (run npm ci in tests/browser)"
fi
