#!/usr/bin/env bash
# Run the test suite (installs .venv first if needed). Extra arguments go to pytest, e.g. -m slow.
# The numerically sensitive tests (marker numeric) run a second time on one thread: their tolerances
# are derived for any batch layout and thread count (tests/_tolerance.py), and this checks it.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
ruff check .
ruff format --check .
python -m pytest -m "not slow" -q "$@"
if [ "$#" -eq 0 ]; then
  OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python -m pytest -m numeric -q
fi
