#!/usr/bin/env bash
# The test command of Gatehouse: ./tests/run.sh (from anywhere).
#
# Steps, in order: rustfmt check, cfn-lint of template.yaml, clippy, then every test of the
# workspace with a moto server (DynamoDB and Secrets Manager) on 127.0.0.1. The Python tools live
# in a project-local .venv, installed on the first run. Every step runs even if an earlier one
# failed; the script exits non-zero if any did.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

MOTO_VERSION=5.2.5
CFN_LINT_VERSION=1.58.0
VENV=.venv
PY=$VENV/bin/python
TARGET_DIR=${CARGO_TARGET_DIR:-target}

header() { printf '\n==> %s\n' "$*"; }

# --- Python tools ------------------------------------------------------------------------------
# (Re)create the venv if missing or broken (e.g. its Python was removed), then install the pinned
# versions only when they are not already there, so that a second run costs no pip call.
if ! "$PY" -c '' 2>/dev/null; then
    header "creating $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
fi
missing=$("$PY" - "$MOTO_VERSION" "$CFN_LINT_VERSION" <<'EOF'
import sys
from importlib import metadata, util
want = {"moto": sys.argv[1], "cfn-lint": sys.argv[2]}
out = []
for name, version in want.items():
    try:
        ok = metadata.version(name) == version
    except metadata.PackageNotFoundError:
        ok = False
    if name == "moto":
        ok = ok and all(util.find_spec(m) for m in ("flask", "flask_cors"))  # the [server] extra
        name = "moto[server]"
    if not ok:
        out.append(f"{name}=={version}")
print(" ".join(out))
EOF
)
if [ -n "$missing" ]; then
    header "installing into $VENV: $missing"
    # shellcheck disable=SC2086  # word splitting wanted: one argument per requirement
    "$PY" -m pip install --quiet --disable-pip-version-check $missing
fi

# --- moto server -------------------------------------------------------------------------------
mkdir -p "$TARGET_DIR"
MOTO_LOG=$TARGET_DIR/moto.log
PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
header "starting moto server on 127.0.0.1:$PORT (log: $MOTO_LOG)"
# moto's server, with DynamoDB requests serialized (see tests/moto_server.py).
"$PY" tests/moto_server.py -H 127.0.0.1 -p "$PORT" >"$MOTO_LOG" 2>&1 &
MOTO_PID=$!
stop_moto() {
    kill "$MOTO_PID" 2>/dev/null || true
    wait "$MOTO_PID" 2>/dev/null || true
}
trap stop_moto EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Wait until it answers HTTP (any status), at most 30 s.
if ! "$PY" - "$PORT" "$MOTO_PID" <<'EOF'
import os, sys, time, urllib.error, urllib.request
port, pid = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit("moto server exited during start-up")
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1)
        sys.exit(0)
    except urllib.error.HTTPError:
        sys.exit(0)
    except OSError:
        time.sleep(0.2)
sys.exit("moto server did not answer within 30 s")
EOF
then
    echo "error: moto server on 127.0.0.1:$PORT is not usable; the end of $MOTO_LOG:" >&2
    tail -n 20 "$MOTO_LOG" >&2 || true
    exit 1
fi

# What the Rust tests use to reach moto; GATEHOUSE_REQUIRE_MOTO makes them fail, not skip,
# when it cannot be reached. Nothing from the caller's AWS configuration may leak in.
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_DEFAULT_PROFILE
export AWS_ENDPOINT_URL=http://127.0.0.1:$PORT
export AWS_ACCESS_KEY_ID=testing
export AWS_SECRET_ACCESS_KEY=testing
export AWS_REGION=us-east-1
export AWS_DEFAULT_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
export GATEHOUSE_REQUIRE_MOTO=1

# --- the steps ---------------------------------------------------------------------------------
failed=()
step() {
    local name=$1
    shift
    header "$name: $*"
    if ! "$@"; then
        failed+=("$name")
    fi
}

step fmt cargo fmt --all -- --check
step cfn-lint "$VENV/bin/cfn-lint" template.yaml
step clippy cargo clippy --workspace --all-targets --locked -- -D warnings
# cargo test closes on the doc-test runs, which have no tests; the summed total is printed last
# so that the run's closing line counts every test.
run_tests() {
    local log=$TARGET_DIR/test-output.log
    local status=0
    cargo test --workspace --locked 2>&1 | tee "$log" || status=${PIPESTATUS[0]}
    "$PY" - "$log" <<'EOF'
import re, sys
passed = failed = 0
for m in re.finditer(r"test result: \w+\. (\d+) passed; (\d+) failed", open(sys.argv[1]).read()):
    passed += int(m.group(1)); failed += int(m.group(2))
print(f"\ntests: {passed} passed, {failed} failed")
EOF
    return "$status"
}
step test run_tests

if [ ${#failed[@]} -gt 0 ]; then
    echo >&2
    echo "FAILED steps: ${failed[*]}" >&2
    exit 1
fi
