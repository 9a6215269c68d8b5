#!/bin/bash
# dashboard.sh — drives the real `rusm dashboard` on port 0 (loopback):
# the page, the JSON API and /metrics with curl; a scenario run seen on the
# WebSocket feed and then in /api/results; malformed HTTP and WebSocket
# input (a small python client) answered with errors while the server goes
# on answering; a graceful stop on SIGTERM with its report.
# usage: dashboard.sh [path of rusm]   (or RUSM_BIN in the environment)
set -uo pipefail

RUSM=${1:-${RUSM_BIN:-}}
if [[ -z $RUSM || ! -x $RUSM ]]; then
  echo "dashboard.sh: give the rusm binary as \$1 or RUSM_BIN" >&2
  exit 2
fi
command -v curl >/dev/null || {
  echo "dashboard.sh: needs curl" >&2
  exit 2
}

tmp=$(mktemp -d)
failures=0
fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}

# The server, its stdout read through a pipe: the URL line is an event to
# wait for, not a file to poll.
coproc DASH { exec "$RUSM" dashboard --listen 127.0.0.1:0 2>"$tmp/err"; }
# shellcheck disable=SC2153 # DASH_PID is set by coproc
dash_pid=$DASH_PID
cleanup() {
  kill "$dash_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
line=
read -r -t 30 -u "${DASH[0]}" line || true
if [[ ! $line =~ ^dashboard:\ (http://127\.0\.0\.1:([0-9]+)/)$ ]]; then
  echo "FAIL: no URL line from rusm dashboard (got '$line')" >&2
  cat "$tmp/err" >&2
  exit 1
fi
URL=${BASH_REMATCH[1]}
PORT=${BASH_REMATCH[2]}
echo "serving at $URL"

# get PATH NAME: GET into $tmp/NAME.{body,head}; prints the status.
get() {
  curl -sS -m 20 -D "$tmp/$2.head" -o "$tmp/$2.body" -w '%{http_code}' "$URL${1#/}"
}

# ---- the page, the API, /metrics --------------------------------------------
[[ $(get / page) == 200 ]] || fail "GET / is not 200"
grep -qi '^content-type: text/html' "$tmp/page.head" || fail "GET / is not HTML"
grep -qi '^etag: "' "$tmp/page.head" || fail "GET / has no ETag"
grep -qi '<html' "$tmp/page.body" || fail "GET / has no page"
etag=$(sed -n 's/^[Ee][Tt][Aa][Gg]: *\(.*\)\r$/\1/p' "$tmp/page.head")
code=$(curl -sS -m 20 -o /dev/null -w '%{http_code}' -H "If-None-Match: $etag" "$URL")
[[ $code == 304 ]] || fail "GET / with its ETag: $code, not 304"
# a hashed asset the page names, when the real page is built in
asset=$(grep -oE '/assets/[^"]+\.js' "$tmp/page.body" | head -n 1)
if [[ -n $asset ]]; then
  [[ $(get "$asset" asset) == 200 ]] || fail "GET $asset is not 200"
  grep -qi '^cache-control: .*immutable' "$tmp/asset.head" || fail "$asset is not cached as immutable"
  grep -qi '^content-type: text/javascript' "$tmp/asset.head" || fail "$asset is not JavaScript"
else
  echo "note: the page was not built into this binary (placeholder page served)"
fi

[[ $(get /api/scenarios scenarios) == 200 ]] || fail "GET /api/scenarios is not 200"
[[ $(get /api/processes processes) == 200 ]] || fail "GET /api/processes is not 200"
[[ $(get /api/sup-tree suptree) == 200 ]] || fail "GET /api/sup-tree is not 200"
[[ $(get /metrics metrics) == 200 ]] || fail "GET /metrics is not 200"
[[ $(get /api/nothing nothing) == 404 ]] || fail "GET /api/nothing is not 404"
python3 - "$tmp" <<'PY' || fail "API and /metrics checks (see above)"
import json, re, sys
d = sys.argv[1]
s = json.load(open(d + "/scenarios.body"))
names = [x["name"] for x in s["scenarios"]]
assert "ping-pong" in names, names
for x in s["scenarios"]:
    assert x["kind"] in ("throughput", "latency", "memory"), x
p = json.load(open(d + "/processes.body"))
assert p["type"] == "processes" and p["total"] >= len(p["processes"]) > 0
reg = {x["name"] for x in p["processes"]}
assert {"kv", "demo_sup", "pool", "ticker"} <= reg, reg
t = json.load(open(d + "/suptree.body"))
assert t["type"] == "sup_tree" and any(n["supervisor"] for n in t["nodes"])
sample = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="[^"]*"(,[a-zA-Z_][a-zA-Z0-9_]*="[^"]*")*\})? [-+0-9.eE]+$')
values = {}
for line in open(d + "/metrics.body").read().splitlines():
    if line.startswith("# HELP ") or line.startswith("# TYPE "):
        continue
    assert sample.match(line), "bad metrics line: " + line
    name, v = line.rsplit(" ", 1)
    values[name] = float(v)
for want in ["rusm_processes", "rusm_spawned_total", 'rusm_exited_total{reason="normal"}',
             "rusm_messages_sent_total", "rusm_messages_delivered_total",
             "rusm_messages_dropped_total", "rusm_messages_shed_total",
             "rusm_supervisor_restarts_total", 'rusm_scheduler_utilisation{scheduler="0"}',
             "rusm_timers_pending", "rusm_tcp_connections_open", "rusm_wasm_instances"]:
    assert want in values, "missing metric " + want
assert values["rusm_processes"] > 0
PY

# ---- a small python client: WebSocket, raw bytes ------------------------------
cat >"$tmp/client.py" <<'PY'
import base64, json, os, socket, struct, sys

PORT = int(os.environ["PORT"])

def conn():
    s = socket.create_connection(("127.0.0.1", PORT), timeout=30)
    return s

def raw(data):
    """Sends bytes, reads until the server closes; returns the answer."""
    s = conn()
    s.sendall(data)
    out = b""
    while True:
        try:
            d = s.recv(65536)
        except ConnectionResetError:
            break
        if not d:
            break
        out += d
    return out

def status(answer):
    line = answer.split(b"\r\n", 1)[0]
    return int(line.split()[1]) if line.startswith(b"HTTP/1.1 ") else None

class WS:
    def __init__(self):
        self.s = conn()
        key = base64.b64encode(os.urandom(16)).decode()
        self.s.sendall(("GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                        "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                        "Sec-WebSocket-Version: 13\r\n\r\n" % (PORT, key)).encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.more()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101 "), head
    def more(self):
        d = self.s.recv(65536)
        if not d:
            raise EOFError("the server closed the connection")
        self.buf += d
    def take(self, n):
        while len(self.buf) < n:
            self.more()
        r, self.buf = self.buf[:n], self.buf[n:]
        return r
    def read(self):
        h = self.take(2)
        n = h[1] & 127
        if n == 126:
            n = struct.unpack(">H", self.take(2))[0]
        elif n == 127:
            n = struct.unpack(">Q", self.take(8))[0]
        return h[0] & 15, self.take(n)
    def send(self, op, payload, mask=True):
        b = bytes([0x80 | op])
        n = len(payload)
        b += bytes([(0x80 if mask else 0) | n]) if n < 126 else bytes([(0x80 if mask else 0) | 126]) + struct.pack(">H", n)
        if mask:
            k = os.urandom(4)
            b += k + bytes(c ^ k[i % 4] for i, c in enumerate(payload))
        else:
            b += payload
        self.s.sendall(b)
    def json(self):
        while True:
            op, p = self.read()
            if op == 1:
                return json.loads(p)
            if op == 8:
                raise EOFError("closed: %r" % p)
    def close_code(self):
        while True:
            op, p = self.read()
            if op == 8:
                return struct.unpack(">H", p[:2])[0] if len(p) >= 2 else None
PY

# ---- a run, seen on the feed, then in /api/results ------------------------------
PORT=$PORT python3 - "$tmp" <<'PY' || fail "run through the feed (see above)"
import json, sys, urllib.request
sys.path.insert(0, sys.argv[1])
from client import WS, PORT
base = "http://127.0.0.1:%d" % PORT
ws = WS()
hello = ws.json()
assert hello["type"] == "hello" and hello["version"] == 1, hello
req = urllib.request.Request(base + "/api/run", method="POST",
                             data=json.dumps({"scenario": "ping-pong", "n": 2000, "repeat": 2}).encode(),
                             headers={"Content-Type": "application/json"})
acc = json.load(urllib.request.urlopen(req, timeout=30))
assert acc["accepted"] is True, acc
states = []
while True:
    m = ws.json()
    if m["type"] != "bench" or m["id"] != acc["id"]:
        continue
    states.append(m["state"])
    if m["state"] in ("done", "error"):
        break
assert states == ["started", "progress", "progress", "done"], (states, m)
res = json.load(urllib.request.urlopen(base + "/api/results", timeout=30))["results"]["ping-pong"]
assert res[-1]["id"] == acc["id"] and res[-1]["ops_per_sec"] == m["result"]["ops_per_sec"], res
assert res[-1]["n"] == 2000 and len(res[-1]["runs"]) == 2, res[-1]
print("ping-pong run %d: %.0f ops/s" % (acc["id"], res[-1]["ops_per_sec"]))
PY

# ---- malformed input: errors, never a crash ---------------------------------------
PORT=$PORT python3 - "$tmp" <<'PY' || fail "malformed input (see above)"
import struct, sys
sys.path.insert(0, sys.argv[1])
from client import WS, raw, status
cases = [
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),            # TLS hello
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\n", 400),
    (b"GET / HTTP/9.9\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nNo Colon Here\r\n\r\n", 400),
    (b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n", 413),
    (b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 200 + b"\r\n", 413),
    (b"POST /api/run HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
     b"Content-Length: 50000000\r\n\r\n" + b"x" * 65536, 413),
    (bytes(range(256)) * 4, 400),
]
for data, want in cases:
    got = status(raw(data))
    assert got == want, (data[:40], got, want)
# WebSocket: bad frames close with their status
for frame, want in [(b"\x81\x02hi", 1002),                      # unmasked
                    (b"\x81\x82\0\0\0\0\xff\xfe", 1007),          # bad UTF-8
                    (b"\x83\x81\0\0\0\0x", 1002),                 # reserved opcode
                    (b"\x89\xfe\x00\xc8\0\0\0\0" + b"x" * 200, 1002),  # long ping
                    (b"\x82\x81\0\0\0\0x", 1003)]:                # binary
    ws = WS()
    ws.json()  # hello
    ws.s.sendall(frame)
    code = ws.close_code()
    assert code == want, (frame[:8], code, want)
# bad client messages get an error message; the session stays open
ws = WS()
ws.json()
ws.send(1, b"not json")
m = ws.json()
while m["type"] != "error":
    m = ws.json()
ws.send(1, b'{"type":"subscribe","topics":["processes"]}')
m = ws.json()
while m["type"] != "processes":
    m = ws.json()
assert any(p["name"] == "kv" for p in m["processes"])
print("malformed input answered; the session and the server go on")
PY
[[ $(get /api/scenarios again) == 200 ]] || fail "the server stopped answering"

# ---- graceful stop ---------------------------------------------------------------------
kill -TERM "$dash_pid"
wait "$dash_pid"
rc=$?
[[ $rc == 0 ]] || fail "rusm dashboard exited $rc on SIGTERM"
grep -q '^shutdown: ' "$tmp/err" || fail "no shutdown report on stderr: $(cat "$tmp/err")"

if ((failures)); then
  echo "dashboard.sh: $failures failure(s)" >&2
  exit 1
fi
echo "dashboard.sh: all checks passed"
