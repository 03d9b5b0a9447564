#!/usr/bin/env bash
# Load test of `idgraph serve` on an org of 1,000,000 contacts, with wrk (Debian's package) on the
# same machine. Prints requests a second and latency percentiles idle, during a full reindex (and
# the memory after it), during a backup through the server, and while the refresher re-reads the
# org (restarted with it on, and the memory it adds); then sends 10,000 hostile requests and checks
# each got an error and the server's memory.
#
#   bash benches/load.sh            # CONTACTS=200000 DURATION=10s for a quicker run
#   PARTS="refresher" bash benches/load.sh   # the idle figures and only the parts named (of
#                                            # "reindex backup refresher hostile"; HOSTILE=0 drops the last)
set -euo pipefail
cd "$(dirname "$0")/.."
CONTACTS=${CONTACTS:-1000000}
AGENTS=${AGENTS:-10000}
DURATION=${DURATION:-15s}
CONNS=${CONNS:-32}
SIM_PORT=${SIM_PORT:-18411}
PORT=${PORT:-18412}
PARTS=${PARTS:-reindex backup refresher hostile}
[ "${HOSTILE:-1}" = 0 ] && PARTS=${PARTS/hostile/}
part() { [[ " $PARTS " == *" $1 "* ]]; }
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release -q
BIN=target/release/idgraph
WORK=$(mktemp -d)
cleanup() { kill "${SERVE_PID:-}" "${SIM_PID:-}" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

echo "== simulator: $CONTACTS contacts, $AGENTS agents"
$BIN sim --port "$SIM_PORT" --contacts "$CONTACTS" --agents "$AGENTS" --token bench 2>"$WORK/sim.log" &
SIM_PID=$!
until curl -s -o /dev/null "http://127.0.0.1:$SIM_PORT/healthz" 2>/dev/null || curl -s -o /dev/null -H 'authorization: Bearer bench' "http://127.0.0.1:$SIM_PORT/users/1"; do sleep 0.5; done

echo "== crawl"
$BIN crawl --drift-url "http://127.0.0.1:$SIM_PORT" --token bench --rate-limit 100000/s --data-dir "$WORK/data" 2>&1 | tail -1

# serve RATE SHARE: the server, with the refresher's share of RATE (0: off).
serve() {
  $BIN serve --listen "127.0.0.1:$PORT" --drift-url "http://127.0.0.1:$SIM_PORT" --token bench --rate-limit "$1" \
    --refresh-share "$2" --data-dir "$WORK/data" --read-token r --admin-token a --full-every 6h --agents-every 6h \
    2>>"$WORK/serve.log" &
  SERVE_PID=$!
  until curl -sf -o /dev/null "http://127.0.0.1:$PORT/readyz"; do sleep 0.2; done
}
rss() { awk '/VmRSS/ {print int($2/1024) " MB"}' "/proc/$SERVE_PID/status"; }
echo "== serve (the refresher off: the idle figures)"
serve 100000/s 0
{ grep -o 'load_ms[^ ]*' "$WORK/serve.log" || true; } | head -1 | sed 's/^/   cold start: /'

# 1,000 real emails for the queries.
{
  echo "emails = {"
  next=""
  for _ in $(seq 10); do
    page=$(curl -s -H 'authorization: Bearer bench' "http://127.0.0.1:$SIM_PORT/contacts?limit=100${next:+&next=$next}")
    echo "$page" | grep -o '"email":"[^"]*"' | sed 's/"email":\("[^"]*"\)/  \1,/'
    next=$(echo "$page" | grep -o '"next":"[^"]*"' | sed 's/"next":"\([^"]*\)"/\1/')
  done
  echo "}"
} > "$WORK/emails.lua"

cat > "$WORK/contact.lua" <<LUA
dofile("$WORK/emails.lua")
local i = 0
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.headers["authorization"] = "Bearer r"
request = function()
  i = i % #emails + 1
  local body = '{"query":"{ contact(email: \\\\"' .. emails[i] .. '\\\\") { owner { email status } } }"}'
  return wrk.format(nil, "/graphql", nil, body)
end
bad = 0
response = function(status, headers, body)
  if status ~= 200 or not string.find(body, '"owner"') then bad = bad + 1 end
end
done = function(summary, latency, requests)
  io.write(string.format("   %.0f requests/s; latency p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms; non-answers %d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, bad))
end
LUA

cat > "$WORK/orphans.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.headers["authorization"] = "Bearer r"
wrk.body = '{"query":"{ orphans(first: 20) { totalCount edges { node { contact { id email } reason owner { id email status } } } } }"}'
done = function(summary, latency, requests)
  io.write(string.format("   %.0f requests/s; latency p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000))
end
LUA

run() { wrk -t2 -c"$CONNS" -d"$DURATION" -s "$1" "http://127.0.0.1:$PORT/graphql" | grep -E "requests/s;" ; }

echo "== contact(email) { owner { email status } }, idle (target >= 10,000/s, p99 < 5 ms)"
run "$WORK/contact.lua"
echo "== orphans, first page, idle (target p99 < 10 ms)"
run "$WORK/orphans.lua"

if part reindex; then
echo "== contact(email) during a full reindex (target p99 <= 2x idle)"
curl -s -o /dev/null -H 'authorization: Bearer a' -H 'content-type: application/json' \
  -d '{"query":"mutation { reindex { crawling } }"}' "http://127.0.0.1:$PORT/graphql"
run "$WORK/contact.lua"
status() { curl -s -H 'authorization: Bearer r' -H 'content-type: application/json' \
  -d '{"query":"{ indexStatus { generation crawling lastResult } }"}' "http://127.0.0.1:$PORT/graphql"; }
echo "   status after the load: $(status)"
until status | grep -q '"crawling":false'; do sleep 1; done
echo "   reindex done: $(status)"
echo "   server memory right after the reindex of $CONTACTS contacts: $(rss) (target < 1.5 GB)"
fi

if part backup; then

echo "== contact(email) during a backup through the server (target: < 15 s, p99 <= 2x idle)"
# wrk runs exactly while the backup does (SIGINT makes it stop and report), so that its p99 is
# the backup's, not diluted by seconds of idle traffic around it.
wrk -t2 -c"$CONNS" -d300s -s "$WORK/contact.lua" "http://127.0.0.1:$PORT/graphql" > "$WORK/wrk-backup.out" &
WRK_PID=$!
sleep 0.3
T0=$(date +%s.%N)
$BIN backup --server "http://127.0.0.1:$PORT" --admin-token a --to "$WORK/backup" 2>&1 | tail -1 | sed 's/^/   /'
python3 -c "print(f'   backup took {$(date +%s.%N) - $T0:.1f} s wall, while wrk ran')"
kill -INT "$WRK_PID"
wait "$WRK_PID" || true
grep -E "requests/s;" "$WORK/wrk-backup.out"
rm -rf "$WORK/backup"
fi

if part refresher; then

echo "== the refresher on (half of 500 requests/s, by listing pages): memory and contact(email)"
echo "   server memory with the refresher off, after the load above: $(rss)"
kill "$SERVE_PID"; wait "$SERVE_PID" 2>/dev/null || true
serve 500/s 0
sleep 30
OFF=$(rss)
kill "$SERVE_PID"; wait "$SERVE_PID" 2>/dev/null || true
serve 500/s 0.5
sleep 30
echo "   memory 30 s after a restart: refresher off $OFF, on $(rss)"
echo "== contact(email) while the refresher runs (target p99 <= 1.5x idle)"
run "$WORK/contact.lua"
echo "   $(curl -s -H 'authorization: Bearer r' -H 'content-type: application/json' -d '{"query":"{ indexStatus { freshness { p50AgeSeconds lastCycleSeconds projectedCycleSeconds } } }"}' "http://127.0.0.1:$PORT/graphql")"
echo "   memory after: $(rss)"
fi

if ! part hostile; then exit 0; fi
echo "== 10,000 hostile requests (bad JSON, deep nesting, huge bodies, wrong tokens)"
echo "   server memory before: $(rss)"
cat > "$WORK/hostile.lua" <<'LUA'
local n = 0
local deep = string.rep("agent(id: \\\"1\\\") { ownedContacts { edges { node { owner { ", 8) .. "id" .. string.rep(" } } } } }", 8)
local kinds = {
  { auth = "Bearer r", body = "{not json" },
  { auth = "Bearer r", body = '{"query":"{ ' .. deep .. ' }"}' },
  { auth = "Bearer r", body = string.rep("[", 200000) },
  { auth = "Bearer wrong", body = '{"query":"{ indexStatus { generation } }"}' },
  { auth = "Bearer r", body = '{"query":"{ orphans(first: 100000) { totalCount } }"}' },
}
answered_with_error = 0
request = function()
  n = n + 1
  local k = kinds[n % #kinds + 1]
  return wrk.format("POST", "/graphql", { ["content-type"] = "application/json", ["authorization"] = k.auth }, k.body)
end
response = function(status, headers, body)
  if status >= 400 or string.find(body, '"errors"') then answered_with_error = answered_with_error + 1 end
end
done = function(summary, latency, requests)
  io.write(string.format("   %d requests, %d socket errors\n", summary.requests, summary.errors.connect + summary.errors.read + summary.errors.write))
end
LUA
wrk -t1 -c8 -d30s -s "$WORK/hostile.lua" "http://127.0.0.1:$PORT/graphql" --timeout 5s | grep -E "requests,|Non-2xx" || true
# A fixed count for the record, with curl: every answer must be an error.
ok=0; errs=0
for i in $(seq 10000); do
  case $((i % 5)) in
    0) code=$(curl -s -o "$WORK/b" -w '%{http_code}' -H 'authorization: Bearer r' -H 'content-type: application/json' --data '{not json' "http://127.0.0.1:$PORT/graphql");;
    1) code=$(curl -s -o "$WORK/b" -w '%{http_code}' -H 'authorization: Bearer wrong' -H 'content-type: application/json' --data '{"query":"{ indexStatus { generation } }"}' "http://127.0.0.1:$PORT/graphql");;
    2) code=$(head -c 2000000 /dev/zero | tr '\0' '[' | curl -s -o "$WORK/b" -w '%{http_code}' -H 'authorization: Bearer r' -H 'content-type: application/json' --data-binary @- "http://127.0.0.1:$PORT/graphql");;
    3) code=$(curl -s -o "$WORK/b" -w '%{http_code}' -H 'authorization: Bearer r' -H 'content-type: application/json' --data '{"query":"{ orphans(first: 100000) { totalCount } }"}' "http://127.0.0.1:$PORT/graphql");;
    4) code=$(curl -s -o "$WORK/b" -w '%{http_code}' -H 'authorization: Bearer r' -H 'content-type: application/json' --data "{\"query\":\"{ $(printf 'whoOwnsWhom(first: 100) { edges { node { agent { ownedContacts(first: 100) { edges { node { owner { %.0s' 1 2) id } } } } } } } } } } } } }\"}" "http://127.0.0.1:$PORT/graphql");;
  esac
  if [ "$code" -ge 400 ] || grep -q '"errors"' "$WORK/b"; then errs=$((errs+1)); else ok=$((ok+1)); fi
done
echo "   curl: 10000 hostile requests, $errs answered with an error, $ok not"
kill -0 "$SERVE_PID" && echo "   the server is alive; memory after: $(rss)"
