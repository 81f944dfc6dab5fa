#!/usr/bin/env bash
# Run the whole pipeline. No argument: the embedded default (generated data, small trained models, CPU).
#   bash sh_scripts/run_all.sh                                   # embedded default
#   bash sh_scripts/run_all.sh --config configs/acml2024_resnet50.yaml \
#        --data-root /data/ILSVRC2012/val --list-csv val_list.csv --annotations /data/ILSVRC2012/bbox_val
#   bash sh_scripts/run_all.sh --limit 20                        # quick look
# Every flag is passed to every stage; completed work is skipped, so a rerun resumes.
# Environment: SALBENCH_IMAGENET_ROOT, SALBENCH_IMAGENET_LIST, SALBENCH_IMAGENET_BOXES fill the data flags.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"

CONFIG="configs/embedded.yaml"
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --config) CONFIG="$2"; shift 2 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
[ -n "${SALBENCH_IMAGENET_ROOT:-}" ] && ARGS+=(--data-root "$SALBENCH_IMAGENET_ROOT")
[ -n "${SALBENCH_IMAGENET_LIST:-}" ] && ARGS+=(--list-csv "$SALBENCH_IMAGENET_LIST")
[ -n "${SALBENCH_IMAGENET_BOXES:-}" ] && ARGS+=(--annotations "$SALBENCH_IMAGENET_BOXES")
C=(--config "$CONFIG" ${ARGS[@]+"${ARGS[@]}"})
OUT="$(python -c 'import sys; from salbench.cli import common_parser, config_from_args; a=common_parser("x").parse_known_args(sys.argv[1:])[0]; print(config_from_args(a).run.output_root)' "${C[@]}")"
KIND="$(python -c 'import sys; from salbench.cli import common_parser, config_from_args; a=common_parser("x").parse_known_args(sys.argv[1:])[0]; print(config_from_args(a).data.kind)' "${C[@]}")"

step() { echo; echo "=== $* ==="; }
start=$(date +%s)
GT=(--label-set groundtruth)

if [ "$KIND" = "embedded" ]; then
  step "0/5 embedded benchmark + classifiers + CASME masker"
  python main/train_embedded.py "${C[@]}" --models embedded_resnet embedded_vgg
  python main/train_casme.py "${C[@]}"
  python main/diagnostics.py "${C[@]}" --model embedded_vgg
fi

step "1/5 diagnostics"
python main/diagnostics.py "${C[@]}"

step "2/5 saliency maps (all methods x label sets)"
python generation/baselines.py "${C[@]}"
python generation/gradients.py "${C[@]}" --deprocess smoothgrad
python generation/gradients.py "${C[@]}" "${GT[@]}" --deprocess jacobgil --method gradient guided_backprop integrated_gradients
python generation/cams.py "${C[@]}"
python generation/rise.py "${C[@]}"
python generation/lime.py "${C[@]}"
python generation/iba.py "${C[@]}"
if [ "$KIND" = "embedded" ]; then
  python generation/casme.py "${C[@]}"
elif [ -n "${SALBENCH_CASME_CHECKPOINT:-}" ]; then
  python generation/casme.py "${C[@]}" --masker "$SALBENCH_CASME_CHECKPOINT"
fi

step "3/5 evaluation"
python evaluation/interpretable_recognition.py "${C[@]}"
python evaluation/complexity_analysis.py "${C[@]}" "${GT[@]}"
python evaluation/localization.py "${C[@]}" "${GT[@]}"

step "4/5 augmented images"
python augmented/generate.py "${C[@]}"
python augmented/evaluate.py "${C[@]}"

step "5/5 report"
python evaluation/report.py "${C[@]}"

echo
echo "done in $(( $(date +%s) - start )) s"
echo "results: $OUT/results.csv"
echo "tables:  $OUT/report/tables/"
echo "report:  $OUT/report/REPORT.md"
