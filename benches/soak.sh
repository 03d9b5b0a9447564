#!/usr/bin/env bash
# Soak: `idgraph serve` on 1,000,000 contacts for DURATION seconds (30 minutes by default) of
#  - owner changes made through Drift's API (PATCH /contacts/{id}), which the simulator announces
#    by webhooks, 10% of them delivered twice and 10% swapped with the next;
#  - agents deprovisioned through SCIM (the simulator's churn), seen by agents refreshes every minute;
#  - the refresher re-reading the org (listing pages) at half the budget;
#  - GraphQL queries (owner lookups, orphan pages, the change feed).
# Prints the server's resident memory at start (after WARMUP seconds of the same load, which fill
# sled's 32 MB page cache and the allocator's pools), peak and end, then, once the org is quiet, the
# changes lost (a contact whose owner in idgraph is not Drift's) and doubled (a contact moved in
# the history more often than it was changed): both must be 0.
#
#   bash benches/soak.sh                         # DURATION=1800 CONTACTS=1000000
#   DURATION=120 CONTACTS=100000 bash benches/soak.sh
#   REFRESH_SHARE=0 bash benches/soak.sh          # the same without the refresher
#   DURATION=14400 RSS_LOG=soak.tsv bash benches/soak.sh   # four hours, RSS each minute in a file
#   BIN=idgraph-sysalloc SERVE_WRAP="heaptrack -o heap" bash benches/soak.sh   # a heap profile
#   KEEP_LOG=serve.log bash benches/soak.sh       # keep the server's log
# A run of two hours or more also prints RSS every 10 minutes and compares the median of its
# last 30 minutes with that of minutes 60-90.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-1800}
WARMUP=${WARMUP:-180}
CONTACTS=${CONTACTS:-1000000}
AGENTS=${AGENTS:-10000}
CHANGES_PER_S=${CHANGES_PER_S:-20}
REFRESH_SHARE=${REFRESH_SHARE:-0.5}
SIM_PORT=${SIM_PORT:-18451}
PORT=${PORT:-18452}
RSS_LOG=${RSS_LOG:-}
SERVE_WRAP=${SERVE_WRAP:-}
if [ -z "${BIN:-}" ]; then
  cargo build --release -q
  BIN=target/release/idgraph
fi
WORK=$(mktemp -d)
cleanup() { kill "${SERVE_PID:-}" "${SIM_PID:-}" 2>/dev/null || true; if [ -n "${KEEP_LOG:-}" ]; then cp "$WORK/serve.log" "$KEEP_LOG"; fi; rm -rf "$WORK"; }
trap cleanup EXIT
SIM="http://127.0.0.1:$SIM_PORT"
URL="http://127.0.0.1:$PORT"

echo "== simulator: $CONTACTS contacts, $AGENTS agents; webhooks to idgraph (10% twice, 10% reordered)"
$BIN sim --port "$SIM_PORT" --contacts "$CONTACTS" --agents "$AGENTS" --token soak \
  --webhook-url "$URL/webhooks/drift" --webhook-token hook --webhook-duplicate-rate 0.1 --webhook-reorder-rate 0.1 \
  --churn "deprovision=60/h" 2>"$WORK/sim.log" &
SIM_PID=$!
until curl -s -o /dev/null -H 'authorization: Bearer soak' "$SIM/users/1"; do sleep 0.5; done
echo "== crawl"
$BIN crawl --drift-url "$SIM" --token soak --rate-limit 100000/s --data-dir "$WORK/data" 2>&1 | tail -1
echo "== serve (agents refresh every minute, the refresher at $REFRESH_SHARE of 500/s)"
$SERVE_WRAP $BIN serve --listen "127.0.0.1:$PORT" --drift-url "$SIM" --token soak --rate-limit 500/s --data-dir "$WORK/data" \
  --read-token r --admin-token a --webhook-token hook --agents-every 60s --full-every 1000h --refresh-share "$REFRESH_SHARE" \
  2>"$WORK/serve.log" &
SERVE_PID=$!
until curl -sf -o /dev/null "$URL/readyz"; do sleep 0.2; done
if [ -n "$SERVE_WRAP" ]; then
  # The wrapper starts the server as its child: measure (and stop) the server itself.
  WRAP_PID=$SERVE_PID
  SERVE_PID=$(pgrep -n -f -- "serve --listen 127.0.0.1:$PORT" | grep -v "^$WRAP_PID\$" || true)
  cleanup() { kill -TERM "${SERVE_PID:-}" 2>/dev/null || true; wait "${WRAP_PID:-}" 2>/dev/null || true; kill "${SIM_PID:-}" 2>/dev/null || true; rm -rf "$WORK"; }
fi

python3 - "$SIM" "$URL" "$SERVE_PID" "$DURATION" "$CHANGES_PER_S" "$WARMUP" "$RSS_LOG" <<'PY'
import json, random, sys, threading, time, urllib.request

sim, url, pid, duration, per_s = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
warmup = float(sys.argv[6])
rss_log = open(sys.argv[7], "w", buffering=1) if sys.argv[7] else None
rng = random.Random(7)

def rss_mb():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0

def call(method, u, body=None, token=None):
    req = urllib.request.Request(u, method=method, data=None if body is None else json.dumps(body).encode())
    req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", "Bearer " + token)
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read() or b"null")

def gql(query, variables=None):
    d = call("POST", url + "/graphql", {"query": query, "variables": variables or {}}, "r")
    if d.get("errors"):
        raise RuntimeError(d["errors"])
    return d["data"]

agents = [u["id"] for u in call("GET", sim + "/users", token="soak")["data"] if not u.get("bot")]
status = gql("{ indexStatus { contacts lastChangeSeq } }")["indexStatus"]
first_seq = status["lastChangeSeq"]
ids = list(range(1000001, 1000001 + status["contacts"]))
changed = {}   # contact -> how many times its owner was changed through the API
began = time.time()
stop = began + warmup + duration
ready_rss = rss_mb()
start_rss = None
peak = ready_rss
errors = {"patch": 0, "query": 0}
print(f"   RSS when ready {ready_rss:.0f} MB; {warmup:.0f} s of warm-up, then {duration:.0f} s measured", flush=True)

def queries():
    while time.time() < stop:
        try:
            c = rng.choice(ids)
            gql("query($ids: [ID!]!) { contactsByIds(ids: $ids) { id owner { email status } } }", {"ids": [str(c)]})
            gql("{ orphans(first: 20) { totalCount edges { node { contact { id } } } } }")
            gql("query($a: String) { changes(after: $a, first: 50) { edges { node { seq } } } }", {"a": None})
        except Exception:
            errors["query"] += 1
        time.sleep(0.02)

threads = [threading.Thread(target=queries, daemon=True) for _ in range(2)]
for t in threads:
    t.start()
next_report = time.time() + 60
samples = []   # RSS every 10 s after the warm-up
next_sample = began + warmup
while time.time() < stop:
    c = rng.choice(ids)
    owner = rng.choice(agents)
    try:
        call("PATCH", f"{sim}/contacts/{c}", {"attributes": {"ownerId": owner}}, "soak")
        changed[c] = changed.get(c, 0) + 1
    except Exception:
        errors["patch"] += 1
    peak = max(peak, rss_mb())
    if start_rss is None and time.time() >= began + warmup:
        start_rss = rss_mb()
        peak = start_rss
        print(f"   RSS at start (after the warm-up) {start_rss:.0f} MB", flush=True)
    if start_rss is not None and time.time() >= next_sample:
        next_sample += 10
        samples.append(rss_mb())
    if time.time() >= next_report:
        next_report += 60
        print(f"   {int(time.time() - began)} s: {len(changed)} contacts changed, RSS {rss_mb():.0f} MB", flush=True)
        if rss_log:
            rss_log.write(f"{int(time.time() - began)}\t{rss_mb():.1f}\t{sum(changed.values())}\t{errors['patch'] + errors['query']}\n")
    time.sleep(1.0 / per_s)
for t in threads:
    t.join()
end_rss = rss_mb()
start_rss = start_rss or ready_rss
peak = max(peak, end_rss)
print(f"   RSS: start {start_rss:.0f} MB, peak {peak:.0f} MB, end {end_rss:.0f} MB ({100 * (end_rss - start_rss) / start_rss:+.1f}%)")
if len(samples) >= 6:
    # RSS moves by tens of MB from one minute to the next: the medians of the first and last
    # tenths of the run (a sample every 10 s) say more than two single samples.
    k = max(3, len(samples) // 10)
    med = lambda xs: sorted(xs)[len(xs) // 2]
    first, last = med(samples[:k]), med(samples[-k:])
    print(f"   RSS medians: first {k * 10} s {first:.0f} MB, last {k * 10} s {last:.0f} MB ({100 * (last - first) / first:+.1f}%)")
if len(samples) >= 6 * 120:
    # Minutes after the warm-up: RSS every 10 minutes, then the plateau test (the median of the
    # last 30 minutes against that of minutes 60-90).
    print("   minute  RSS (median of the 10 minutes before, MB)")
    for m in range(10, len(samples) // 6 + 1, 10):
        print(f"   {m:6d}  {med(samples[(m - 10) * 6:m * 6]):.0f}")
    base, tail = med(samples[360:540]), med(samples[-180:])
    print(f"   RSS medians: minutes 60-90 {base:.0f} MB, last 30 minutes {tail:.0f} MB ({100 * (tail - base) / base:+.1f}%)")
print(f"   {sum(changed.values())} owner changes on {len(changed)} contacts; errors: {errors}")

# Quiet: no more changes; let the webhooks and an agents refresh land.
time.sleep(90)
lost = 0
sample = list(changed)
for i in range(0, len(sample), 1000):
    chunk = sample[i:i + 1000]
    got = gql("query($ids: [ID!]!) { contactsByIds(ids: $ids) { id owner { id } } }", {"ids": [str(c) for c in chunk]})
    for c, node in zip(chunk, got["contactsByIds"]):
        truth = call("GET", f"{sim}/contacts/{c}", token="soak")["data"]
        want = truth.get("attributes", truth).get("ownerId", truth.get("ownerId"))
        have = node and node["owner"] and node["owner"]["id"]
        if str(want) != str(have):
            lost += 1
# Doubled: a contact moved in the history (after the start) more often than it was changed.
moves = {}
after = str(first_seq)
while True:
    page = gql("query($a: String) { changes(after: $a, first: 100, kinds: [CONTACT_MOVED]) { edges { cursor node { contactId } } pageInfo { hasNextPage endCursor } } }", {"a": after})["changes"]
    for e in page["edges"]:
        cid = int(e["node"]["contactId"])
        moves[cid] = moves.get(cid, 0) + 1
    if not page["pageInfo"]["hasNextPage"]:
        break
    after = page["pageInfo"]["endCursor"]
doubled = sum(max(0, n - changed.get(c, 0)) for c, n in moves.items() if c in changed)
print(f"   lost changes: {lost} of {len(changed)} contacts checked against Drift; doubled changes: {doubled}")
metrics = urllib.request.urlopen(urllib.request.Request(url + "/metrics", headers={"authorization": "Bearer a"}), timeout=60).read().decode()
copies = [l.split()[1] for l in metrics.splitlines() if l.startswith("idgraph_index_copies_total ")]
print(f"   in-place changes that copied the whole index (a reader held a snapshot): {copies[0] if copies else '?'}")
PY
