#!/usr/bin/env bash
# Installs Apache Flink's jars for the harness's Flink peer (`rill-bench run … --peer flink`)
# and prints the directory that holds them (the last line of stdout).
#
# The jars come from the PyPI package `apache-flink-libraries` (the jars PyFlink ships:
# flink-dist, log4j), installed without dependencies into a Python venv in a cache
# directory outside the repository, so every clone and worktree on the machine shares it:
#
#   $RILL_FLINK_HOME               (default: ${XDG_CACHE_HOME:-~/.cache}/rill-bench/flink-$VERSION)
#   $RILL_FLINK_HOME/venv          the venv
#   $RILL_FLINK_HOME/lib -> …/site-packages/pyflink/lib
#
# RILL_FLINK_VERSION picks the version (default below; 2.x). Running it again when the
# jars are there does nothing. Needs python3 with venv and pip, and PyPI.
set -euo pipefail

VERSION="${RILL_FLINK_VERSION:-2.3.0}"
case "$VERSION" in
    2.*) ;;
    *) echo "setup.sh: RILL_FLINK_VERSION=$VERSION: the peer needs Flink 2.x" >&2; exit 2 ;;
esac
HOME_DIR="${RILL_FLINK_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/rill-bench/flink-$VERSION}"
mkdir -p "$HOME_DIR"

lib_ok() { ls "$HOME_DIR"/lib/flink-dist-*.jar >/dev/null 2>&1; }

if ! lib_ok; then
    command -v python3 >/dev/null 2>&1 || {
        echo "setup.sh: python3 is missing (needed to install apache-flink-libraries)" >&2
        exit 1
    }
    # Two harnesses (or tests) starting at once: one installs, the other waits.
    exec 9>"$HOME_DIR/.lock"
    flock 9
    if ! lib_ok; then
        echo "setup.sh: installing apache-flink-libraries==$VERSION into $HOME_DIR/venv" >&2
        rm -rf "$HOME_DIR/venv" "$HOME_DIR/lib"
        python3 -m venv "$HOME_DIR/venv" >&2 || {
            echo "setup.sh: python3 -m venv failed (Debian: apt-get install python3-venv)" >&2
            exit 1
        }
        "$HOME_DIR/venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            --no-deps "apache-flink-libraries==$VERSION" >&2
        lib="$("$HOME_DIR/venv/bin/python" - <<'PY'
import os, sysconfig
print(os.path.join(sysconfig.get_paths()["purelib"], "pyflink", "lib"))
PY
)"
        ls "$lib"/flink-dist-*.jar >/dev/null 2>&1 || {
            echo "setup.sh: apache-flink-libraries installed but $lib has no flink-dist jar" >&2
            exit 1
        }
        ln -sfn "$lib" "$HOME_DIR/lib"
    fi
fi
echo "$HOME_DIR/lib"
