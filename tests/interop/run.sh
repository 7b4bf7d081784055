#!/usr/bin/env bash
# Interoperability run: real relying-party libraries (openid-client for Node, Authlib for
# Python) drive a real Portcullis server through its HTML login and consent forms.
#
#   tests/interop/run.sh            (from any directory)
#
# Environment:
#   PORTCULLIS_BIN      the server binary (default: <repo>/target/debug/portcullis)
#   INTEROP_TIMEOUT     seconds allowed for each library's flow (default 120)
#   INTEROP_KEEP_TMP=1  keep the temporary folder (database, server log) for inspection
#
# Prints one line per step, then exactly one final line "interop: N passed, M failed" and
# exits non-zero when anything failed.
set -euo pipefail

# A relative PORTCULLIS_BIN is relative to the caller's directory: resolve it before moving.
BIN=${PORTCULLIS_BIN:-}
case "$BIN" in
  "" | /*) ;;
  */*) BIN="$(cd "$(dirname "$BIN")" 2>/dev/null && pwd)/$(basename "$BIN")" ;;
  *) BIN=$(command -v "$BIN" || echo "$PWD/$BIN") ;;
esac

cd "$(dirname "${BASH_SOURCE[0]}")"
HERE=$(pwd)
TOTAL=2
FLOW_TIMEOUT=${INTEROP_TIMEOUT:-120}
if [ -z "$BIN" ]; then
  BIN="$(cd "$HERE/../.." && pwd)/target/debug/portcullis"
fi

# Nothing from the caller's Portcullis configuration leaks into the server under test.
while IFS= read -r var; do
  unset "$var"
done < <(compgen -e | grep -E '^PORTCULLIS_' || true)
export NO_COLOR=1

WORK=""
SERVER_PID=""

log() { printf 'interop: %s\n' "$*"; }

# A failure before the flows could run: both libraries count as failed.
setup_failed() {
  log "setup failed: $*"
  if [ -n "$WORK" ] && [ -f "$WORK/server.log" ]; then
    log "last 50 lines of the server log:"
    tail -n 50 "$WORK/server.log" | sed 's/^/  | /'
  fi
  stop_server
  echo "interop: 0 passed, $TOTAL failed"
  exit 1
}

stop_server() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$SERVER_PID" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$SERVER_PID" 2>/dev/null; then
      log "the server did not stop within 10 s of SIGTERM; killing it"
      kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=""
}

cleanup() {
  stop_server
  if [ -n "$WORK" ] && [ -d "$WORK" ]; then
    if [ "${INTEROP_KEEP_TMP:-}" = 1 ]; then
      log "kept $WORK"
    else
      rm -rf "$WORK"
    fi
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
# Dependencies
# ---------------------------------------------------------------------------------------------

command -v node >/dev/null || setup_failed "node is not installed"
command -v npm >/dev/null || setup_failed "npm is not installed"
command -v python3 >/dev/null || setup_failed "python3 is not installed"

if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  log "installing npm dependencies (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error >/tmp/interop-npm.$$.log 2>&1 \
    || { cat /tmp/interop-npm.$$.log; rm -f /tmp/interop-npm.$$.log; setup_failed "npm ci failed"; }
  rm -f /tmp/interop-npm.$$.log
fi

if [ ! -x .venv/bin/python ]; then
  log "creating the Python virtualenv (.venv)"
  rm -rf .venv
  python3 -m venv .venv || setup_failed "python3 -m venv failed (is the python3-venv package installed?)"
fi
if [ ! -f .venv/.installed ] || [ requirements.txt -nt .venv/.installed ]; then
  log "installing Python dependencies (pip install -r requirements.txt)"
  .venv/bin/pip install --disable-pip-version-check -q -r requirements.txt >/tmp/interop-pip.$$.log 2>&1 \
    || { cat /tmp/interop-pip.$$.log; rm -f /tmp/interop-pip.$$.log; setup_failed "pip install failed"; }
  rm -f /tmp/interop-pip.$$.log
  touch .venv/.installed
fi

# ---------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------

[ -x "$BIN" ] || setup_failed "no server binary at $BIN (build it, or set PORTCULLIS_BIN)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/portcullis-interop.XXXXXX")

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
random_secret() {
  python3 -c 'import secrets; print(secrets.token_urlsafe(18))'
}

PORT=$(free_port)
CALLBACK_PORT=$(free_port)
while [ "$CALLBACK_PORT" = "$PORT" ]; do CALLBACK_PORT=$(free_port); done
ISSUER="http://127.0.0.1:$PORT"
REDIRECT_URI="http://127.0.0.1:$CALLBACK_PORT/cb"

export PORTCULLIS__SERVER__LISTEN="127.0.0.1:$PORT"
export PORTCULLIS__DATABASE__URL="sqlite://$WORK/p.db"
export PORTCULLIS__SECURITY__BCRYPT_COST=4
PORTCULLIS__BOOTSTRAP__ADMIN_PASSWORD="admin-$(random_secret)"
export PORTCULLIS__BOOTSTRAP__ADMIN_PASSWORD
# Dynamic client registration, for openid-client's dynamicClientRegistration.
INITIAL_ACCESS_TOKEN="initial-$(random_secret)-$(random_secret)"
export PORTCULLIS__REGISTRATION__ENABLED=true
export PORTCULLIS__REGISTRATION__INITIAL_ACCESS_TOKEN="$INITIAL_ACCESS_TOKEN"

USERNAME=alice
EMAIL=alice@example.com
PASSWORD="alice-$(random_secret)"

log "server binary: $BIN"
log "starting the server at $ISSUER (work dir $WORK)"
(cd "$WORK" && exec "$BIN" serve) >"$WORK/server.log" 2>&1 &
SERVER_PID=$!

http_status() {
  curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" 2>/dev/null || true
}

ready=""
for _ in $(seq 1 300); do
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    wait "$SERVER_PID" 2>/dev/null && code=0 || code=$?
    SERVER_PID=""
    setup_failed "the server exited (status $code) before it was ready"
  fi
  if [ "$(http_status "$ISSUER/readyz")" = 200 ]; then
    ready=1
    break
  fi
  sleep 0.1
done
[ -n "$ready" ] || setup_failed "GET /readyz did not answer 200 within 30 s"
log "server ready"

# The CLI runs in the server's working directory, with the same database settings.
cli() { (cd "$WORK" && "$BIN" "$@"); }

json_field() {
  python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
}

printf '%s\n' "$PASSWORD" \
  | cli user create --username "$USERNAME" --email "$EMAIL" --password-stdin --json \
    >"$WORK/user.json" 2>"$WORK/user.err" \
  || { cat "$WORK/user.err" "$WORK/user.json"; setup_failed "portcullis user create failed"; }
log "created user $USERNAME"

create_client() {  # name -> writes $WORK/client-<name>.json
  cli client create --name "$1" --redirect-uri "$REDIRECT_URI" \
    --scopes "openid profile email offline_access" --json \
    >"$WORK/client-$1.json" 2>"$WORK/client-$1.err" \
    || { cat "$WORK/client-$1.err" "$WORK/client-$1.json"; setup_failed "portcullis client create --name $1 failed"; }
  json_field client_id <"$WORK/client-$1.json" >/dev/null \
    && json_field client_secret <"$WORK/client-$1.json" >/dev/null \
    || { cat "$WORK/client-$1.json"; setup_failed "client create --json for $1 gave no client_id/client_secret"; }
  log "created client $1 ($(json_field client_id <"$WORK/client-$1.json"))"
}
create_client openid-client
create_client authlib

# ---------------------------------------------------------------------------------------------
# The flows
# ---------------------------------------------------------------------------------------------

passed=0
failed=0

run_flow() {  # label client-name command...
  local label=$1 name=$2 status
  shift 2
  log "--- $label"
  set +e
  INTEROP_ISSUER="$ISSUER" \
  INTEROP_CLIENT_ID="$(json_field client_id <"$WORK/client-$name.json")" \
  INTEROP_CLIENT_SECRET="$(json_field client_secret <"$WORK/client-$name.json")" \
  INTEROP_REDIRECT_URI="$REDIRECT_URI" \
  INTEROP_USERNAME="$USERNAME" \
  INTEROP_PASSWORD="$PASSWORD" \
  INTEROP_EMAIL="$EMAIL" \
  INTEROP_INITIAL_ACCESS_TOKEN="$INITIAL_ACCESS_TOKEN" \
    timeout --kill-after=5 "$FLOW_TIMEOUT" "$@" 2>&1
  status=$?
  set -e
  if [ "$status" -eq 0 ]; then
    passed=$((passed + 1))
    log "$label: passed"
  else
    failed=$((failed + 1))
    if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
      log "$label: FAILED (timed out after ${FLOW_TIMEOUT} s)"
    else
      log "$label: FAILED (exit status $status)"
    fi
  fi
}

run_flow "openid-client (Node $(node --version))" openid-client node openid-client.mjs
run_flow "authlib (Python $(.venv/bin/python -c 'import platform; print(platform.python_version())'))" \
  authlib .venv/bin/python authlib_flow.py

if ! kill -0 "$SERVER_PID" 2>/dev/null; then
  log "the server is no longer running"
  failed=$((failed > 0 ? failed : TOTAL))
  passed=$((TOTAL - failed))
fi

if [ "$failed" -gt 0 ]; then
  log "last 50 lines of the server log:"
  tail -n 50 "$WORK/server.log" | sed 's/^/  | /'
fi

stop_server
echo "interop: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
