#!/usr/bin/env bash
# Browser test: headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core) signs
# in to a real Portcullis server with a TOTP code, uses the admin UI, and runs a code flow.
#
#   tests/browser/run.sh            (from any directory)
#
# Environment:
#   PORTCULLIS_BIN       the server binary; when unset, `cargo build -p portcullis-web --bin
#                        portcullis` runs first and <repo>/target/debug/portcullis is used
#   BROWSER_CHROMIUM     the browser (default /usr/bin/chromium)
#   BROWSER_SCREENSHOTS  where the screenshots go (default <repo>/target/browser-screenshots)
#   BROWSER_TIMEOUT      seconds allowed for the whole run (default 120)
#   BROWSER_KEEP_TMP=1   keep the temporary folder (database, server log)
#
# Prints one line per check, "screenshots: PATH", then "browser: N passed, M failed", and
# exits non-zero when anything failed.
set -euo pipefail

# Relative paths are relative to the caller's directory: resolve them before moving.
absolute() {
  case "$1" in
    "" | /*) printf '%s' "$1" ;;
    */*) printf '%s/%s' "$(cd "$(dirname "$1")" 2>/dev/null && pwd)" "$(basename "$1")" ;;
    *) command -v "$1" 2>/dev/null || printf '%s/%s' "$PWD" "$1" ;;
  esac
}
BIN=$(absolute "${PORTCULLIS_BIN:-}")
case "${BROWSER_SCREENSHOTS:-}" in
  "" | /*) SHOTS=${BROWSER_SCREENSHOTS:-} ;;
  *) SHOTS="$PWD/$BROWSER_SCREENSHOTS" ;;
esac

cd "$(dirname "${BASH_SOURCE[0]}")"
REPO=$(cd ../.. && pwd)
CHROMIUM=${BROWSER_CHROMIUM:-/usr/bin/chromium}

fail() {
  echo "browser: setup failed: $*"
  echo "browser: 0 passed, 1 failed"
  exit 1
}

command -v node >/dev/null || fail "node is not installed"
command -v npm >/dev/null || fail "npm is not installed"
[ -x "$CHROMIUM" ] || fail "no browser at $CHROMIUM (apt-get install chromium)"

if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "browser: installing npm dependencies (npm ci)"
  npm_log=$(mktemp)
  npm ci --no-audit --no-fund --loglevel=error >"$npm_log" 2>&1 \
    || { cat "$npm_log"; rm -f "$npm_log"; fail "npm ci failed"; }
  rm -f "$npm_log"
fi

if [ -z "$BIN" ]; then
  echo "browser: cargo build -p portcullis-web --bin portcullis"
  (cd "$REPO" && cargo build -q -p portcullis-web --bin portcullis) || fail "cargo build failed"
  BIN="${CARGO_TARGET_DIR:-$REPO/target}/debug/portcullis"
  BIN=$(absolute "$BIN")
fi
[ -x "$BIN" ] || fail "no server binary at $BIN"

# Nothing from the caller's Portcullis configuration reaches the server under test.
while IFS= read -r var; do
  unset "$var"
done < <(compgen -e | grep -E '^PORTCULLIS_' || true)

export PORTCULLIS_BIN="$BIN" BROWSER_CHROMIUM="$CHROMIUM"
[ -z "$SHOTS" ] || export BROWSER_SCREENSHOTS="$SHOTS"
echo "browser: server binary $BIN, $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM"), Node $(node --version)"

# run.mjs bounds its own steps and stops the server on SIGTERM; this is the backstop.
set +e
timeout --kill-after=10 "${BROWSER_TIMEOUT:-120}" node run.mjs
status=$?
set -e
# On SIGTERM run.mjs prints its own summary; killed, it printed none.
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
  echo "browser: timed out after ${BROWSER_TIMEOUT:-120} s"
  [ "$status" -eq 124 ] || echo "browser: 0 passed, 1 failed"
fi
exit "$status"
