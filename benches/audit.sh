#!/usr/bin/env bash
# The audit view at scale: an org of 1,000,000 contacts and 10,000 agents, DEPART of them
# deprovisioned through SCIM, served by `idgraph serve`; headless Chromium opens /audit (first paint
# = from signing in to both charts drawn), clicks the most exposed agent (its page and graph), and
# opens the org's HTML report from a file. Prints the figures and the report's size.
#
#   bash benches/audit.sh           # CONTACTS=100000 AGENTS=1000 for a quicker run
# Needs Chromium and `npm ci` in tests/browser (as the browser tests do).
set -euo pipefail
cd "$(dirname "$0")/.."
CONTACTS=${CONTACTS:-1000000}
AGENTS=${AGENTS:-10000}
DEPART=${DEPART:-300}
SIM_PORT=${SIM_PORT:-18431}
PORT=${PORT:-18432}
SHOTS=${SHOTS:-}
cargo build --release -q
BIN=target/release/idgraph
WORK=$(mktemp -d)
cleanup() { kill "${SERVE_PID:-}" "${SIM_PID:-}" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
SIM="http://127.0.0.1:$SIM_PORT"
URL="http://127.0.0.1:$PORT"
gql() { curl -s -H 'content-type: application/json' -H "authorization: Bearer $1" -d "$2" "$URL/graphql"; }

echo "== simulator: $CONTACTS contacts, $AGENTS agents"
$BIN sim --port "$SIM_PORT" --contacts "$CONTACTS" --agents "$AGENTS" --token bench 2>"$WORK/sim.log" &
SIM_PID=$!
until curl -s -o /dev/null -H 'authorization: Bearer bench' "$SIM/users/1"; do sleep 0.5; done
echo "== crawl"
$BIN crawl --drift-url "$SIM" --token bench --rate-limit 100000/s --data-dir "$WORK/data" 2>&1 | tail -1
echo "== serve"
$BIN serve --listen "127.0.0.1:$PORT" --drift-url "$SIM" --token bench --rate-limit 100000/s --data-dir "$WORK/data" \
  --read-token r --admin-token a --full-every 6h --agents-every 6h --refresh-share 0 2>"$WORK/serve.log" &
SERVE_PID=$!
until curl -sf -o /dev/null "$URL/readyz"; do sleep 0.2; done

echo "== $DEPART agents deprovisioned through SCIM, then an agents refresh"
# SCIM pages hold at most 100 users; each round deletes the first page's.
left=$DEPART
while [ "$left" -gt 0 ]; do
  n=$(( left < 100 ? left : 100 ))
  curl -s -H 'authorization: Bearer bench' "$SIM/scim/v2/Users?count=$n" | grep -o '"id":"[0-9]*"' \
    | sed 's/"id":"\([0-9]*\)"/\1/' | while read -r id; do
      curl -s -o /dev/null -X DELETE -H 'authorization: Bearer bench' "$SIM/scim/v2/Users/$id"; done
  left=$(( left - n ))
done
gql a '{"query":"mutation { reindex(scope: AGENTS) { crawling } }"}' >/dev/null
sleep 1
until gql r '{"query":"{ indexStatus { crawling } }"}' | grep -q '"crawling":false'; do sleep 0.5; done
gql r '{"query":"{ indexStatus { contacts agents orphans } }"}'; echo

echo "== server time"
for q in 'auditSummary' 'auditReport(all: true, orphanLimit: 2000)' 'auditTimeline' 'auditDocument(all: true, format: CSV)'; do
  body=$(printf '{"query":"{ %s }"}' "$q")
  gql r "$body" >/dev/null
  t=$(curl -s -o /dev/null -w '%{time_total}' -H 'content-type: application/json' -H 'authorization: Bearer r' -d "$body" "$URL/graphql")
  echo "   $q: ${t}s"
done

echo "== HTML reports"
$BIN audit --all --format html --server "$URL" --token r > "$WORK/org.html"
TOP=$(gql r '{"query":"{ auditReport(all: true, orphanLimit: 0) }"}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["auditReport"]["report"]["rows"][0]["agent"]["id"])')
$BIN audit --agent "$TOP" --format html --server "$URL" --token r > "$WORK/agent.html"
echo "   org report: $(stat -c %s "$WORK/org.html") bytes; agent $TOP's report: $(stat -c %s "$WORK/agent.html") bytes"

echo "== headless Chromium"
node tests/browser/audit.mjs "$URL" "$WORK/org.html" "$WORK/agent.html" r $SHOTS > "$WORK/browser.json"
python3 - "$WORK/browser.json" <<'PY'
import json, sys
v = json.load(open(sys.argv[1]))
if not v.get("ok"):
    sys.exit("browser check failed: " + v.get("error", "?"))
print(f"   /audit first paint (sign-in to cards, both charts and the owners table drawn): {v['firstPaintMs']} ms; {v['org']['bars']} bars")
print(f"   /audit complete (the orphans list and the digest filled in): {v['completeMs']} ms")
print(f"   agent page ({v['agent']['cards']['contacts-now']} contacts): {v['agentPageMs']} ms to its graph of {v['agent']['nodes']} nodes; next frame {v['agentFrameMs']} ms")
print(f"   org HTML report opened from a file: {v['report']['openMs']} ms, {len(v['report']['network'])} network requests")
print(f"   requests that left the server: {len(v['external'])}")
PY
