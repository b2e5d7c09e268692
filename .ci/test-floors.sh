#!/usr/bin/env bash
# Test pyproject.toml's floors: install every requirement at its lowest allowed version (the others as
# pip resolves them) into a throwaway virtualenv, then run the unit tier there. Slow (it downloads torch
# and its CUDA libraries, ~3 GB): not part of `make test`; run it after changing a requirement.
#   bash .ci/test-floors.sh [pytest arguments]     default: tests/unit
# PYTHON: the interpreter of the virtualenv (python3); FLOORS_VENV: where to build it (default: a new
# temporary folder, removed afterwards; a given one is kept, for reruns); TORCH_INDEX: a wheel index for
# torch and torchvision, e.g. https://download.pytorch.org/whl/cpu for the CPU build.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${FLOORS_VENV:-$(mktemp -d /tmp/gammasweep-floors.XXXXXX)}
[ -n "${FLOORS_VENV:-}" ] || trap 'rm -rf "$venv"' EXIT
"${PYTHON:-python3}" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --quiet)
"${pip[@]}" --upgrade pip
"${pip[@]}" packaging pyyaml  # tests/dependencies.py reads pyproject.toml with them
"$venv/bin/python" tests/dependencies.py floors >"$venv/floors.txt"
if [ -n "${TORCH_INDEX:-}" ]; then
  grep -E '^torch(vision)?==' "$venv/floors.txt" | xargs "${pip[@]}" --index-url "$TORCH_INDEX"
fi
"${pip[@]}" --constraint "$venv/floors.txt" --editable '.[test]'
"$venv/bin/python" -m pip check
echo "floors installed ($venv):"
"$venv/bin/python" -m pip freeze --exclude-editable | grep -iE "^($(cut -d= -f1 "$venv/floors.txt" | paste -sd'|'))==" || true
"$venv/bin/python" -m pytest "${@:-tests/unit}"
