#!/bin/bash
# e2e_dashboard.sh — the dashboard in a real headless browser: runs
# tests/e2e/dashboard.spec.mjs (Debian's Chromium driven by npm
# playwright-core) against the real binary. Installs what it needs when
# missing: the chromium Debian package (apt-get) and playwright-core into a
# cache directory outside the tree (never `npx playwright install`, which
# downloads a browser of its own). Screenshots go to
# ${TEST_OUTPUT_DIR:-build/e2e} (relative to the source tree).
# usage: e2e_dashboard.sh [path of rusm]   (or RUSM_BIN in the environment)
# Knobs: RUSM_E2E_CACHE (default ~/.cache/rusm-e2e), CHROMIUM_BIN.
# ctest-labels: e2e
set -uo pipefail

RUSM=${1:-${RUSM_BIN:-}}
if [[ -z $RUSM || ! -x $RUSM ]]; then
  echo "e2e_dashboard.sh: give the rusm binary as \$1 or RUSM_BIN" >&2
  exit 2
fi
RUSM=$(cd "$(dirname "$RUSM")" && pwd)/$(basename "$RUSM")
SRC=${RUSM_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
OUT=${TEST_OUTPUT_DIR:-build/e2e}
[[ $OUT == /* ]] || OUT=$SRC/$OUT
CACHE=${RUSM_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rusm-e2e}
CHROMIUM=${CHROMIUM_BIN:-/usr/bin/chromium}
PLAYWRIGHT_VERSION=1.65.1 # pinned: the version this test was written with

die() {
  echo "e2e_dashboard.sh: $*" >&2
  exit 1
}

# The browser: Debian's package, installed the way scripts/build installs
# the rest (only when missing, saying so).
if [[ ! -x $CHROMIUM ]]; then
  # shellcheck source=scripts/lib.sh disable=SC1091
  source "$SRC/scripts/lib.sh"
  # shellcheck disable=SC2034 # read by rusm_ensure_packages
  RUSM_PACKAGES=(chromium)
  (rusm_ensure_packages) || die "could not install chromium"
  [[ -x $CHROMIUM ]] || die "no $CHROMIUM after installing chromium"
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  die "node and npm are needed (playwright-core)"
fi

# The driver: playwright-core from npm, into the cache (it downloads no
# browser: it drives the one above).
have=$(node -p "require('$CACHE/node_modules/playwright-core/package.json').version" 2>/dev/null)
if [[ $have != "$PLAYWRIGHT_VERSION" ]]; then
  echo "installing playwright-core@$PLAYWRIGHT_VERSION into $CACHE"
  mkdir -p "$CACHE"
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --prefix "$CACHE" --no-audit \
    --no-fund --loglevel=error "playwright-core@$PLAYWRIGHT_VERSION" </dev/null ||
    die "npm install playwright-core failed"
fi

mkdir -p "$OUT"
RUSM_BIN=$RUSM TEST_OUTPUT_DIR=$OUT CHROMIUM_BIN=$CHROMIUM \
  PLAYWRIGHT_CORE_DIR=$CACHE/node_modules/playwright-core \
  node "$SRC/tests/e2e/dashboard.spec.mjs"
