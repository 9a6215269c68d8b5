# shellcheck shell=bash
# Helpers shared by scripts/build and scripts/test (sourced, not run).
#
# Environment knobs (all optional):
#   RUSM_CC           C compiler of every build (default gcc)
#   RUSM_TSAN_CC      C compiler of the ThreadSanitizer build (default RUSM_CC)
#   RUSM_BUILD_JOBS   parallel compile jobs (default: ninja's own choice)
#   RUSM_TEST_JOBS    tests ctest runs at once (default 2)
#   RUSM_NO_INSTALL=1 never call apt-get (fail instead if something is missing)

RUSM_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Debian packages the build and every test stage need. clang and lld: the
# alternative compiler (RUSM_CC=clang) and, later, fuzzers and Wasm guests;
# python3: scripts/test reads compile_commands.json with it.
RUSM_PACKAGES=(cmake ninja-build gcc clang clang-format clang-tidy lld
  libcmocka-dev gcovr python3 pkg-config libgnutls28-dev libngtcp2-dev
  libngtcp2-crypto-gnutls-dev libclang-rt-14-dev)

rusm_die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# Prints the packages of "$@" that are not installed.
rusm_missing_packages() {
  local installed
  # One dpkg-query for all. It fails when one is unknown (never installed):
  # that one is missing, the others still count.
  installed=$(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "$@" \
    2>/dev/null | awk '$2 == "ii" { print $1 }') || true
  local p
  for p in "$@"; do
    grep -qxF "$p" <<<"$installed" || printf '%s\n' "$p"
  done
}

# Installs whatever of RUSM_PACKAGES is missing: quietly, saying what, with an
# apt-get update first. Never reads stdin (CI has none).
rusm_ensure_packages() {
  command -v dpkg-query >/dev/null || {
    echo "note: no dpkg here; assuming ${RUSM_PACKAGES[*]} are present"
    return 0
  }
  local missing
  mapfile -t missing < <(rusm_missing_packages "${RUSM_PACKAGES[@]}")
  ((${#missing[@]} == 0)) && return 0
  if [[ ${RUSM_NO_INSTALL:-0} == 1 ]]; then
    rusm_die "missing Debian packages: ${missing[*]} (RUSM_NO_INSTALL=1)"
  fi
  echo "installing Debian packages: ${missing[*]}"
  local sudo=()
  if ((EUID != 0)); then
    command -v sudo >/dev/null || rusm_die "not root and no sudo: install ${missing[*]}"
    sudo=(sudo -n)
  fi
  local log
  log=$(mktemp)
  if ! { "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get update -q &&
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -q --no-install-recommends "${missing[@]}"; } \
    </dev/null >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    rusm_die "apt-get failed to install: ${missing[*]}"
  fi
  rm -f "$log"
  mapfile -t missing < <(rusm_missing_packages "${RUSM_PACKAGES[@]}")
  ((${#missing[@]} == 0)) || rusm_die "still missing after install: ${missing[*]}"
}

# Serialises scripts/build and scripts/test runs in one tree (two ninjas in
# one build directory corrupt its state). Held until the script exits.
rusm_lock() {
  mkdir -p "$RUSM_ROOT/build"
  exec 9>"$RUSM_ROOT/build/.lock"
  command -v flock >/dev/null || return 0
  if ! flock -n 9; then
    echo "waiting for another scripts/build or scripts/test in this tree..."
    flock 9
  fi
}

# rusm_configure DIR CMAKE_ARGS...
# Configures DIR with CMake + Ninja unless it already is, with these very
# arguments (remembered in DIR/.rusm-configure). When they change, the old
# cache goes but the objects stay: ninja rebuilds only what the change touches.
rusm_configure() {
  local dir=$1
  shift
  local cc=${RUSM_CC:-gcc}
  local args=(-G Ninja -DCMAKE_C_COMPILER="$cc" -DCMAKE_ASM_COMPILER="$cc" "$@")
  local want stamp=$dir/.rusm-configure
  want=$(printf '%s\n' "${args[@]}")
  if [[ -f $dir/build.ninja && -f $stamp && "$(<"$stamp")" == "$want" ]]; then
    return 0
  fi
  mkdir -p "$dir"
  rm -f "$dir/CMakeCache.txt" "$stamp"
  echo "configuring $dir"
  local log=$dir/configure.log
  if ! cmake -S "$RUSM_ROOT" -B "$dir" "${args[@]}" </dev/null >"$log" 2>&1; then
    cat "$log"
    echo "error: cmake configure of $dir failed (log: $log)" >&2
    return 1
  fi
  # Show CMake's warnings (e.g. a module with no sources yet), not its chatter.
  grep -A3 -E '^CMake (Warning|Deprecation)' "$log" || true
  printf '%s\n' "$want" >"$stamp"
}

# rusm_ninja DIR [TARGET...]: an incremental build of DIR.
rusm_ninja() {
  local dir=$1
  shift
  local jobs=()
  [[ -n ${RUSM_BUILD_JOBS:-} ]] && jobs=(-j "$RUSM_BUILD_JOBS")
  ninja -C "$dir" "${jobs[@]}" "$@" </dev/null
}

# The release build: -O2 -g -DNDEBUG, what benchmarks and the CLI use.
RUSM_RELEASE_DIR=$RUSM_ROOT/build/release
rusm_build_release() {
  rusm_configure "$RUSM_RELEASE_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo &&
    rusm_ninja "$RUSM_RELEASE_DIR"
}
