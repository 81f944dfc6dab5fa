#!/usr/bin/env bash
# Run the whole pipeline (every stage in order; completed work is skipped, so a rerun resumes).
#   bash sh_scripts/run_all.sh                                   # embedded default (configs/embedded.yaml)
#   bash sh_scripts/run_all.sh --config configs/acml2024_resnet50.yaml \
#        --data-root /data/ILSVRC2012/val --list-csv val_list.csv --annotations /data/ILSVRC2012/bbox_val
#   bash sh_scripts/run_all.sh --limit 20                        # quick look
# Every flag goes to every stage. Environment: SALBENCH_IMAGENET_ROOT, SALBENCH_IMAGENET_LIST,
# SALBENCH_IMAGENET_BOXES fill the data flags; SALBENCH_CASME_CHECKPOINT names a CASME masker for
# non-embedded data. The stages run in one process (python -m salbench run), each exactly as
# its script would run from the command line.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"

ARGS=("$@")
[ -n "${SALBENCH_IMAGENET_ROOT:-}" ] && ARGS+=(--data-root "$SALBENCH_IMAGENET_ROOT")
[ -n "${SALBENCH_IMAGENET_LIST:-}" ] && ARGS+=(--list-csv "$SALBENCH_IMAGENET_LIST")
[ -n "${SALBENCH_IMAGENET_BOXES:-}" ] && ARGS+=(--annotations "$SALBENCH_IMAGENET_BOXES")
[ -n "${SALBENCH_CASME_CHECKPOINT:-}" ] && ARGS+=(--casme-checkpoint "$SALBENCH_CASME_CHECKPOINT")
python -m salbench run ${ARGS[@]+"${ARGS[@]}"}
