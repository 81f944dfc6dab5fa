#!/usr/bin/env bash
# Run the test suite (installs .venv first if needed). Extra arguments go to pytest, e.g. -m slow.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
ruff check .
ruff format --check .
python -m pytest -m "not slow" -q "$@"
