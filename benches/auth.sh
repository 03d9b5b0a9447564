#!/usr/bin/env bash
# What sign-in costs: `contact(email)` requests a second with wrk, side by side on one org,
# against one server at a time:
#   1. no authentication and no access log (--insecure-no-auth --no-access-log): the floor
#   2. no authentication, with the access log
#   3. a service token, without the access log; 4. with it (how a script runs against idgraph)
#   5. a JWT from a real OpenID provider (tests/browser/oidc.mjs), without; 6. with the access log
# and, after each, the access log's entries written and dropped (from /metrics).
# Targets: authentication <= 5% (3 and 5 vs 1), the access log <= 10% (2 vs 1, 4 vs 3, 6 vs 5),
# none dropped.
#
#   bash benches/auth.sh                  # CONTACTS=100000 DURATION=10s ROUNDS=5
set -euo pipefail
cd "$(dirname "$0")/.."
CONTACTS=${CONTACTS:-100000}
AGENTS=${AGENTS:-1000}
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-5}
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

# run NAME DATA CONFIG BEARER [serve flags...]: one server, one warm-up and one run of wrk; the
# requests a second, p99, non-answers and the access log's entries written and dropped.
run() {
  local name=$1 data=$2 config=$3 bearer=$4
  shift 4
  $BIN serve --listen "127.0.0.1:$PORT" --drift-url "http://127.0.0.1:$SIM_PORT" --token bench \
    --full-every 6h --agents-every 6h --refresh-share 0 --config "$config" --data-dir "$data" "$@" \
    2>>"$WORK/serve.log" &
  SERVE_PID=$!
  until curl -sf -o /dev/null "http://127.0.0.1:$PORT/readyz"; do sleep 0.2; done
  lua "$bearer" >"$WORK/run.lua"
  wrk -t2 -c"$CONNS" -d2s -s "$WORK/run.lua" "http://127.0.0.1:$PORT/graphql" >/dev/null # warm-up
  local out m
  out=$(wrk -t2 -c"$CONNS" -d"$DURATION" -s "$WORK/run.lua" "http://127.0.0.1:$PORT/graphql" | tail -1)
  m=$(curl -s "http://127.0.0.1:$PORT/metrics")
  kill "$SERVE_PID"; wait "$SERVE_PID" 2>/dev/null || true
  echo "$name|$out|$(echo "$m" | awk '/^idgraph_access_log_entries_total/ {print $2}')|$(echo "$m" | awk '/^idgraph_access_log_dropped_total/ {print $2}')" >>"$WORK/runs"
}

# Open-mode servers need a data directory without service tokens; the others get a copy with one.
cp -r "$WORK/data" "$WORK/data-tokens"
TOKEN=$($BIN token create bench --role auditor --data-dir "$WORK/data-tokens" 2>/dev/null)
echo "== contact(email) { owner { email status } }: $ROUNDS rounds of $DURATION each, the configurations interleaved in each round (against drift), $CONNS connections"
for round in $(seq "$ROUNDS"); do
  run "1 no auth, no access log" "$WORK/data" "$WORK/plain.toml" "" --insecure-no-auth --no-access-log
  run "2 no auth, access log" "$WORK/data" "$WORK/plain.toml" "" --insecure-no-auth
  run "3 service token, no access log" "$WORK/data-tokens" "$WORK/plain.toml" "$TOKEN" --no-access-log
  run "4 service token, access log" "$WORK/data-tokens" "$WORK/plain.toml" "$TOKEN"
  if [ -n "$JWT" ]; then
    run "5 JWT (oidc-provider), no access log" "$WORK/data-tokens" "$WORK/oidc.toml" "$JWT" --no-access-log
    run "6 JWT (oidc-provider), access log" "$WORK/data-tokens" "$WORK/oidc.toml" "$JWT"
  fi
  echo "   round $round done"
done
python3 - "$WORK/runs" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    name, out, written, dropped = line.rstrip("\n").split("|")
    rate, p99, bad = out.split()
    runs.setdefault(name, []).append((float(rate), float(p99), int(bad), written or "-", dropped or "-"))
med = {n: statistics.median(r[0] for r in v) for n, v in runs.items()}
for n, v in runs.items():
    rates = sorted(r[0] for r in v)
    print(f"{n:40s} {med[n]:8.0f} req/s (runs {rates[0]:.0f}..{rates[-1]:.0f}), p99 {statistics.median(r[1] for r in v):.2f} ms, "
          f"non-answers {sum(r[2] for r in v)}, log written {v[-1][3]} dropped {v[-1][4]}")
def cost(a, b, what):
    if a in med and b in med:
        print(f"   {what}: {100 * (1 - med[b] / med[a]):.1f}% of the requests a second")
k = sorted(med)
cost(k[0], k[2], "authentication by service token (3 vs 1; target <= 5%)")
if len(k) > 4: cost(k[0], k[4], "authentication by JWT (5 vs 1; target <= 5%)")
cost(k[0], k[1], "the access log without authentication (2 vs 1; target <= 10%)")
cost(k[2], k[3], "the access log with a service token (4 vs 3; target <= 10%)")
if len(k) > 5: cost(k[4], k[5], "the access log with a JWT (6 vs 5; target <= 10%)")
PY
