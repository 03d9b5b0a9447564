#!/usr/bin/env bash
# What a GraphQL client sees of `idgraph serve` (issue: GraphQL that every client can use):
# contact(email) requests/s as a share of /healthz requests/s in the same run, the batch lookup of
# 1,000 emails end to end from a Python client, the introspection query, and streamed exports.
# wrk (Debian's package) and python3 run on the same machine as the server.
#
#   bash benches/client.sh                    # 1,000,000 contacts
#   CONTACTS=100000 bash benches/client.sh    # the issue's second size
set -euo pipefail
cd "$(dirname "$0")/.."
CONTACTS=${CONTACTS:-1000000}
AGENTS=${AGENTS:-10000}
DEPROVISION=${DEPROVISION:-20}
# Skip the biggest owners before deprovisioning (a smaller leaver: fewer orphans).
DEPROVISION_SKIP=${DEPROVISION_SKIP:-0}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
SIM_PORT=${SIM_PORT:-18421}
PORT=${PORT:-18422}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release -q
BIN=target/release/idgraph
WORK=$(mktemp -d)
cleanup() { kill "${SERVE_PID:-}" "${SIM_PID:-}" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

echo "== simulator: $CONTACTS contacts, $AGENTS agents; $DEPROVISION of the biggest owners (after the first $DEPROVISION_SKIP) deprovisioned"
$BIN sim --port "$SIM_PORT" --contacts "$CONTACTS" --agents "$AGENTS" --token bench 2>"$WORK/sim.log" &
SIM_PID=$!
until curl -s -o /dev/null -H 'authorization: Bearer bench' "http://127.0.0.1:$SIM_PORT/users/list"; do sleep 0.5; done
for id in $(curl -s -H 'authorization: Bearer bench' "http://127.0.0.1:$SIM_PORT/users/list" | python3 -c "
import json,sys; print(' '.join(str(u['id']) for u in json.load(sys.stdin)['data'] if not u.get('bot'))[:100000])" | tr ' ' '\n' | tail -n +$((DEPROVISION_SKIP + 1)) | head -"$DEPROVISION"); do
  curl -s -o /dev/null -X DELETE -H 'authorization: Bearer bench' "http://127.0.0.1:$SIM_PORT/scim/v2/Users/$id"
done
$BIN crawl --drift-url "http://127.0.0.1:$SIM_PORT" --token bench --rate-limit 100000/s --data-dir "$WORK/data" 2>&1 | tail -1
$BIN serve --listen "127.0.0.1:$PORT" --drift-url "http://127.0.0.1:$SIM_PORT" --token bench --rate-limit 100000/s \
  --data-dir "$WORK/data" --read-token r --admin-token a --full-every 6h --agents-every 6h --refresh-share 0 2>"$WORK/serve.log" &
SERVE_PID=$!
until curl -sf -o /dev/null "http://127.0.0.1:$PORT/readyz"; do sleep 0.2; done
G="http://127.0.0.1:$PORT/graphql"

python3 - "$SIM_PORT" > "$WORK/emails.txt" <<'PY'
import re, sys, urllib.request
port, out, nxt = sys.argv[1], [], None
while len(out) < 1000:
    url = f"http://127.0.0.1:{port}/contacts?limit=100" + (f"&next={nxt}" if nxt else "")
    text = urllib.request.urlopen(urllib.request.Request(url, headers={"authorization": "Bearer bench"})).read().decode()
    out += re.findall(r'"email":"([^"]*)"', text)
    m = re.search(r'"next":"([^"]*)"', text)
    nxt = m and m.group(1)
print("\n".join(out[:1000]))
PY
{ echo "emails = {"; sed 's/.*/  "&",/' "$WORK/emails.txt"; echo "}"; } > "$WORK/emails.lua"
cat > "$WORK/contact.lua" <<LUA
dofile("$WORK/emails.lua")
local i = 0
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.headers["authorization"] = "Bearer r"
request = function()
  i = i % #emails + 1
  return wrk.format(nil, "/graphql", nil, '{"query":"{ contact(email: \\\\"' .. emails[i] .. '\\\\") { owner { email status } } }"}')
end
LUA
cat > "$WORK/report.lua" <<'LUA'
done = function(summary, latency, requests)
  io.write(string.format("%.0f %.2f\n", summary.requests / (summary.duration / 1e6), latency:percentile(99) / 1000))
end
LUA
cat "$WORK/report.lua" >> "$WORK/contact.lua"
# /healthz twice: as wrk sends a fixed request, and made by the same Lua request() function as
# the query's (wrk's Lua costs CPU on the same two cores; the second is the like-for-like baseline).
cat > "$WORK/healthz.lua" <<'LUA'
local i = 0
request = function()
  i = i % 1000 + 1
  return wrk.format("GET", "/healthz?i=" .. i, nil, nil)
end
LUA
cat "$WORK/report.lua" >> "$WORK/healthz.lua"
rate() { wrk -t2 -c"$CONNS" -d"$DURATION" -s "$1" "$2" | tail -1; }
read -r H HP99 < <(rate "$WORK/report.lua" "http://127.0.0.1:$PORT/healthz")
read -r HL HLP99 < <(rate "$WORK/healthz.lua" "http://127.0.0.1:$PORT/healthz")
read -r Q QP99 < <(rate "$WORK/contact.lua" "$G")
echo "== /healthz: $H requests/s (p99 $HP99 ms) fixed, $HL requests/s (p99 $HLP99 ms) made by Lua like the query's"
echo "   contact(email){owner{email status}}: $Q requests/s (p99 $QP99 ms); the server answered $(curl -s "http://127.0.0.1:$PORT/metrics" | awk '/^idgraph_graphql_planned_total/ {print $2}') GraphQL requests by a plan"
python3 -c "print(f'   the query runs at {100*$Q/$HL:.0f}% of /healthz sent alike, {100*$Q/$H:.0f}% of the fixed /healthz (target >= 60%)')"

python3 - "$G" "$WORK/emails.txt" <<'PY'
import http.client, json, sys, time, urllib.parse, urllib.request, statistics
url, emails = sys.argv[1], open(sys.argv[2]).read().split()
# The owners' emails alone (the answer comes in input order, so the email needs no echo), and the
# contact's id with its owner's email and status.
queries = [("owner { email }", "query($e: [String!]!) { contactsByEmails(emails: $e) { owner { email } } }"),
           ("id owner { email status }", "query($e: [String!]!) { contactsByEmails(emails: $e) { id owner { email status } } }")]
headers = {"content-type": "application/json", "authorization": "Bearer r"}
u = urllib.parse.urlsplit(url)
conn = http.client.HTTPConnection(u.hostname, u.port)
def urllib_once():
    # A new connection each request, as urllib.request does.
    t = time.perf_counter(); d = json.load(urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers)))
    return time.perf_counter() - t, d
def keepalive_once():
    # One kept-alive connection, as requests.Session or any pooled client does.
    t = time.perf_counter(); conn.request("POST", u.path, body=body, headers=headers)
    d = json.loads(conn.getresponse().read()); return time.perf_counter() - t, d
for (fields, q), (name, once) in [(queries[0], ("a kept-alive connection (http.client)", keepalive_once)),
                                   (queries[1], ("a kept-alive connection (http.client)", keepalive_once)),
                                   (queries[1], ("a new connection each (urllib)", urllib_once))]:
    body = json.dumps({"query": q, "variables": {"e": emails}}).encode()
    for _ in range(20): once()
    found = sum(1 for c in once()[1]["data"]["contactsByEmails"] if c)
    # Each answer is dropped once timed, as a client that uses it and moves on does: keeping
    # all 200 (600,000 objects) would time Python's garbage collector walking them instead.
    ms = sorted(once()[0] * 1000 for _ in range(200))
    print(f"== contactsByEmails {{ {fields} }}, 1,000 emails in one request from Python over {name}: median {statistics.median(ms):.2f} ms, "
          f"p90 {ms[179]:.2f} ms; {found} found (target < 2 ms at 100k, < 3 ms at 1M)")
PY
# The same request from a compiled client (wrk, one connection, one request at a time): the
# round trip every client pays, before its own JSON decoding.
python3 - "$WORK/emails.txt" > "$WORK/batch.json" <<'PY'
import json, sys
q = "query($e: [String!]!) { contactsByEmails(emails: $e) { id owner { email status } } }"
print(json.dumps({"query": q, "variables": {"e": open(sys.argv[1]).read().split()}}))
PY
cat > "$WORK/batch.lua" <<LUA
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.headers["authorization"] = "Bearer r"
local f = io.open("$WORK/batch.json"); wrk.body = f:read("*a"); f:close()
done = function(summary, latency, requests)
  io.write(string.format("%.2f %.2f %d\n", latency:percentile(50) / 1000, latency:percentile(99) / 1000, summary.requests))
end
LUA
read -r B50 B99 BN < <(wrk -t1 -c1 -d5s -s "$WORK/batch.lua" "$G" | tail -1)
echo "== contactsByEmails, 1,000 emails in one request from wrk over one connection: median $B50 ms, p99 $B99 ms ($BN requests; target < 2 ms at 100k, < 3 ms at 1M)"
INTRO=$(node -e "process.stdout.write(JSON.stringify({query: require('./tests/browser/node_modules/graphql').getIntrospectionQuery({descriptions:true,specifiedByUrl:true,directiveIsRepeatable:true,schemaDescription:true,inputValueDeprecation:true})}))" 2>/dev/null || echo '{"query":"{ __schema { types { name fields { name type { name ofType { name ofType { name } } } } } } }"}')
echo "$INTRO" > "$WORK/intro.json"
for i in 1 2 3; do curl -s -o /dev/null -H 'authorization: Bearer r' -H 'content-type: application/json' --data @"$WORK/intro.json" "$G"; done
T=$(curl -s -o "$WORK/intro.out" -w '%{time_total}' -H 'authorization: Bearer r' -H 'content-type: application/json' --data @"$WORK/intro.json" "$G")
python3 -c "print(f'== introspection (graphql-js getIntrospectionQuery): {1000*$T:.1f} ms end to end, $(wc -c < "$WORK/intro.out") bytes (target < 20 ms)')"
# Each export twice: to /dev/null (what the server and the socket deliver) and to a file (what a
# user saving it waits for, this disk's writes included).
for what in orphans contacts; do
  median() { for _ in 1 2 3 4 5; do curl -s -o "$1" -w '%{time_total}\n' -H 'authorization: Bearer r' "http://127.0.0.1:$PORT/export/$what?format=ndjson"; done | sort -n | sed -n 3p; }
  TN=$(median /dev/null)
  T=$(median "$WORK/export.out")
  python3 -c "print(f'== /export/$what as NDJSON: $(wc -l < "$WORK/export.out") rows in {1000*$TN:.0f} ms end to end to /dev/null, {1000*$T:.0f} ms to a file (medians of 5)')"
done
echo "   server memory after the exports: $(awk '/VmRSS/ {print $2/1024 " MB"}' "/proc/$SERVE_PID/status"), peak $(awk '/VmHWM/ {print $2/1024 " MB"}' "/proc/$SERVE_PID/status")"

# idgraph against DuckDB in process, on the same org in the same run (the scripting user's
# alternative: load the org into DuckDB and query it there). DuckDB's tables are idgraph's own
# Parquet exports, loaded before the clock starts; idgraph answers over HTTP from a kept-alive
# connection. Medians of 15 after 3 warm-ups.
if python3 -c "import pyarrow, duckdb" 2>/dev/null; then
python3 - "http://127.0.0.1:$PORT" "$WORK/emails.txt" "$WORK" <<'PY'
import http.client, io, json, statistics, sys, time, urllib.parse
import duckdb, pyarrow as pa, pyarrow.ipc as ipc, pyarrow.parquet as pq
base, emails, work = sys.argv[1], open(sys.argv[2]).read().split(), sys.argv[3]
u = urllib.parse.urlsplit(base)
conn = http.client.HTTPConnection(u.hostname, u.port)
H = {"authorization": "Bearer r"}
def fetch(path, body=None):
    conn.request("POST" if body is not None else "GET", path, body=body, headers={**H, "content-type": "application/json"} if body is not None else H)
    r = conn.getresponse(); data = r.read(); assert r.status == 200, (path, r.status, data[:200]); return data
def med(f, n=15):
    for _ in range(3): f()
    ts = []
    for _ in range(n):
        t = time.perf_counter(); f(); ts.append((time.perf_counter() - t) * 1000)
    return statistics.median(ts), min(ts), max(ts)
for t in ("contacts", "agents"):
    open(f"{work}/{t}.parquet", "wb").write(fetch(f"/export/{t}?format=parquet"))
db = duckdb.connect()
db.execute(f"create table contacts as select * from read_parquet('{work}/contacts.parquet')")
db.execute(f"create table agents as select * from read_parquet('{work}/agents.parquet')")
db.execute("create table wanted as select unnest(?::varchar[]) as email", [emails])
# As the README reads them: the answer's bytes handed to pyarrow as they are (no copy).
def arrow_table(b): return ipc.open_stream(b).read_all()
def parquet_table(b): return pq.read_table(pa.BufferReader(b))
body = json.dumps(emails).encode()
rows = [
  ("owners of 1,000 emails",
   lambda: db.sql("select w.email, c.owner_email, c.owner_status from wanted w left join contacts c on c.contact_email = w.email").to_arrow_table(),
   [("JSON (contactsByEmails)", lambda: json.loads(fetch("/graphql", json.dumps({"query": "query($e: [String!]!) { contactsByEmails(emails: $e) { owner { email status } } }", "variables": {"e": emails}}).encode()))),
    ("Arrow (/lookup)", lambda: arrow_table(fetch("/lookup/contacts?by=email&format=arrow&columns=key,owner_email,owner_status", body))),
    ("Parquet (/lookup)", lambda: parquet_table(fetch("/lookup/contacts?by=email&format=parquet&columns=key,owner_email,owner_status", body)))]),
  ("every orphan with its owner",
   lambda: db.sql("select c.contact_id, c.contact_email, a.agent_id, a.email, a.status from contacts c join agents a on a.agent_id = c.owner_id where a.status <> 'ACTIVE' and a.status <> 'BOT'").to_arrow_table(),
   [("NDJSON (/export)", lambda: [json.loads(l) for l in fetch("/export/orphans").splitlines()]),
    ("Arrow (/export)", lambda: arrow_table(fetch("/export/orphans?format=arrow"))),
    ("Parquet (/export)", lambda: parquet_table(fetch("/export/orphans?format=parquet")))]),
]
for q, duck, ours in rows:
    d, _, _ = med(duck)
    print(f"== {q}: DuckDB in process {d:.2f} ms ({duck().num_rows} rows)")
    for name, f in ours:
        m, lo, hi = med(f)
        got = f()
        n = got.num_rows if hasattr(got, "num_rows") else len(got) if isinstance(got, list) else len(got["data"]["contactsByEmails"])
        print(f"   ({n} rows)", end="")
        print(f"   idgraph {name}: {m:.2f} ms ({lo:.2f}..{hi:.2f}); DuckDB / idgraph = {d / m:.2f}x")
def arrow_streamed(path):
    # As the README reads a large export: pyarrow reads the response as it comes (no copy of
    # the whole answer into one bytes object first).
    conn.request("GET", path, headers=H)
    r = conn.getresponse(); assert r.status == 200, (path, r.status)
    t = ipc.open_stream(r).read_all(); r.read(); return t
m, lo, hi = med(lambda: arrow_streamed("/export/contacts?format=arrow"), n=5)
rows = arrow_streamed("/export/contacts?format=arrow").num_rows
print(f"== the whole contact list ({rows} rows) as Arrow into a pyarrow table, read from the response: {m:.0f} ms ({lo:.0f}..{hi:.0f}) (target < 300 ms at 1M)")
m, lo, hi = med(lambda: arrow_table(fetch("/export/contacts?format=arrow")), n=5)
print(f"   the same, the whole answer read first, then handed to pyarrow: {m:.0f} ms ({lo:.0f}..{hi:.0f})")
PY
else
  echo "== DuckDB comparison skipped: pip install pyarrow duckdb"
fi
