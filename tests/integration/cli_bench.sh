#!/bin/bash
# cli_bench.sh — drives the real `rusm` binary: `rusm bench` JSON output,
# argument errors (exit 2, message on stderr), help, list and version.
# usage: cli_bench.sh [path of rusm]   (or RUSM_BIN in the environment)
set -uo pipefail

RUSM=${1:-${RUSM_BIN:-}}
if [[ -z $RUSM || ! -x $RUSM ]]; then
  echo "cli_bench.sh: give the rusm binary as \$1 or RUSM_BIN" >&2
  exit 2
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0

fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}

# run NAME ARGS...: runs rusm, keeping stdout, stderr and the exit status.
run() {
  local name=$1
  shift
  "$RUSM" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err"
  echo $? >"$tmp/$name.rc"
}
rc() { cat "$tmp/$1.rc"; }

# check_json NAME PYTHON-EXPR...: the last stdout line of NAME is one JSON
# object `j` for which every expression holds.
check_json() {
  local name=$1
  shift
  python3 - "$tmp/$name.out" "$@" <<'PY' || fail "$name: JSON checks (see above)"
import json, sys
lines = open(sys.argv[1]).read().splitlines()
if not lines:
    sys.exit("no output")
try:
    j = json.loads(lines[-1])
except ValueError as e:
    sys.exit("last line is not JSON: %s: %r" % (e, lines[-1][:200]))
if not isinstance(j, dict):
    sys.exit("last line is not a JSON object")
bad = [e for e in sys.argv[2:] if not eval(e, {"j": j})]
if bad:
    sys.exit("failed: %s\nin: %s" % (bad, lines[-1][:600]))
PY
}

required='all(k in j for k in ("scenario", "ops", "seconds", "ops_per_sec", "runs"))'

# The contract's example: one JSON object on the last line of stdout.
run pingpong bench ping-pong --n 1000 --json
[[ $(rc pingpong) == 0 ]] || fail "bench ping-pong: exit $(rc pingpong): $(cat "$tmp/pingpong.err")"
check_json pingpong "$required" \
  'j["scenario"] == "ping-pong"' 'j["ops"] == 1000' \
  'isinstance(j["runs"], list) and len(j["runs"]) == 5' \
  'j["seconds"] > 0 and j["ops_per_sec"] > 0' \
  'j["p50_us"] > 0 and j["p99_us"] >= j["p50_us"]' \
  'j["baseline_ops_per_sec"] > 0' \
  'abs(j["ratio"] - j["ops_per_sec"] / j["baseline_ops_per_sec"]) <= 1e-3 * j["ratio"] + 1e-6' \
  'all("seconds" in r and "baseline_seconds" in r for r in j["runs"])'

# Other scenarios, small; --repeat, --schedulers and --metrics.
run storm bench spawn-storm --n 2000 --repeat 2 --schedulers 1 --json --metrics
[[ $(rc storm) == 0 ]] || fail "bench spawn-storm: exit $(rc storm): $(cat "$tmp/storm.err")"
check_json storm "$required" 'j["ops"] == 2000' 'len(j["runs"]) == 2' \
  'j["schedulers"] == 1' 'j["metrics"]["spawned"] >= 2001' \
  '"baseline_ops_per_sec" in j and "p50_us" not in j'

run fanin bench fan-in --n=1600 --repeat=1 --json
[[ $(rc fanin) == 0 ]] || fail "bench fan-in: exit $(rc fanin): $(cat "$tmp/fanin.err")"
check_json fanin "$required" 'j["ops"] == 1600' 'j["baseline_ops_per_sec"] > 0'

for s in idle-memory idle-memory-stackful; do
  run "$s" bench "$s" --n 500 --repeat 1 --json
  [[ $(rc "$s") == 0 ]] || fail "bench $s: exit $(rc "$s"): $(cat "$tmp/$s.err")"
  check_json "$s" "$required" 'j["ops"] == 500' 'j["bytes_per_process"] > 0' \
    'j["mappings"] > 0' '"baseline_ops_per_sec" not in j'
done

# Without --json: a readable summary.
run text bench ping-pong --n 500 --repeat 1
[[ $(rc text) == 0 ]] || fail "bench ping-pong (text): exit $(rc text)"
grep -q 'ratio' "$tmp/text.out" || fail "text summary has no ratio line"
grep -q 'p99' "$tmp/text.out" || fail "text summary has no p99"

# Argument errors: exit 2, a clear message and the usage on stderr.
run nope bench nope
[[ $(rc nope) == 2 ]] || fail "bench nope: exit $(rc nope), want 2"
grep -q "unknown scenario 'nope'" "$tmp/nope.err" || fail "bench nope: message: $(cat "$tmp/nope.err")"
grep -q 'usage: rusm bench' "$tmp/nope.err" || fail "bench nope: no usage on stderr"
[[ ! -s $tmp/nope.out ]] || fail "bench nope: wrote to stdout"

for args in "bench" "bench ping-pong --n 0" "bench ping-pong --n" \
  "bench ping-pong --repeat x" "bench ping-pong --bogus" "bench fan-in --n 3" \
  "bench ping-pong fan-in" "frobnicate"; do
  # shellcheck disable=SC2086 # word splitting intended
  run bad $args
  [[ $(rc bad) == 2 ]] || fail "rusm $args: exit $(rc bad), want 2"
  [[ -s $tmp/bad.err ]] || fail "rusm $args: nothing on stderr"
done
run none
[[ $(rc none) == 2 ]] || fail "rusm (no arguments): exit $(rc none), want 2"

# Help, list, version.
run help --help
[[ $(rc help) == 0 ]] || fail "rusm --help: exit $(rc help)"
grep -q 'bench' "$tmp/help.out" || fail "rusm --help does not mention bench"
run bhelp bench --help
[[ $(rc bhelp) == 0 ]] || fail "rusm bench --help: exit $(rc bhelp)"
grep -q -- '--json' "$tmp/bhelp.out" || fail "rusm bench --help lacks --json"
run list bench list
[[ $(rc list) == 0 ]] || fail "rusm bench list: exit $(rc list)"
for s in spawn-storm ping-pong fan-in idle-memory idle-memory-stackful; do
  grep -q "^$s " "$tmp/list.out" || fail "bench list lacks $s"
done
run version --version
if [[ $(rc version) != 0 ]] || ! grep -q '^rusm ' "$tmp/version.out"; then
  fail "rusm --version: $(cat "$tmp/version.out")"
fi

if ((failures)); then
  echo "cli_bench.sh: $failures failure(s)" >&2
  exit 1
fi
echo "cli_bench.sh: all checks passed"
