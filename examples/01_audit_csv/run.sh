#!/usr/bin/env bash
# Audit an existing predictions CSV: a generated hand-radiograph study (10 hold-outs x 91 images x 37 keypoints).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/out}"
mkdir -p "$out"
# 1. A study to audit (skip this step with your own preds.csv / meta.csv).
python - "$out" <<'PY'
import sys
from fairlandmark.inputs.demo_data import make_demo_study
preds, meta = make_demo_study(seed=1)
preds.to_csv(f"{sys.argv[1]}/preds.csv", index=False)
meta.to_csv(f"{sys.argv[1]}/meta.csv", index=False)
PY
# 2. The audit: sex, age binned at 14 (young 9-13 / old 14-18) and their intersection, mm from the wrist width.
fairlandmark audit "$out/preds.csv" "$out/meta.csv" -a sex -a age --bin age=14 --wrist-width 1,5,50 \
    --threshold-mm 2 --threshold-mm 4 --threshold-mm 10 --family wrist=1-18 --family fingers=19-37 \
    --permutations 10000 --bootstrap 2000 --seed 0 --json "$out/audit.json" --csv "$out/audit.csv"
echo "JSON: $out/audit.json   CSV: $out/audit.csv"
