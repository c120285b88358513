#!/usr/bin/env bash
# Builds the Python plugin into a component:
#
#   examples/python-plugin/build.sh [OUT.wasm]   (default: flowmail-python.wasm beside it)
#   examples/python-plugin/build.sh --install    (only set up componentize-py)
#
# Needs python3 (3.10 or newer) with venv. componentize-py 0.25.1 is installed from the
# Python registry into a virtual environment beside this script (or at
# $FLOWMAIL_PYTHON_VENV) the first time.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${FLOWMAIL_PYTHON_VENV:-$here/.venv}"
version="0.25.1"

if ! command -v python3 >/dev/null; then
    echo "python3 is missing: install it with 'apt-get install -y python3 python3-venv'" >&2
    exit 1
fi
if [ "$("$venv/bin/componentize-py" --version 2>/dev/null)" != "componentize-py $version" ]; then
    python3 -m venv --clear "$venv" || {
        echo "python3 cannot make a virtual environment: install it with 'apt-get install -y python3-venv'" >&2
        exit 1
    }
    "$venv/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$version"
fi
[ "${1:-}" = "--install" ] && exit 0

out="$(realpath -m "${1:-$here/flowmail-python.wasm}")"
cd "$here"
# The world `mail-plugin` of flowmail's WIT; the module `app` holds the exports.
"$venv/bin/componentize-py" -d "$here/../../wit" -w mail-plugin componentize app -o "$out"
