#!/usr/bin/env bash
# The paper's whole study on synthetic X-ray-like data: hold-outs, audit, significance, privacy,
# GroupDRO mitigation, compare, HTML report.
#   bash examples/02_full_study/run.sh            # --quick (default): CPU, a few minutes
#   bash examples/02_full_study/run.sh --full     # paper settings (densenet121, 512x512, 10 hold-outs): a GPU
set -euo pipefail
mode="${1:---quick}"
here="$(cd "$(dirname "$0")" && pwd)"
out="${OUT:-$here/out}"
train="python -m reference_model"
mkdir -p "$out"

if [ "$mode" = "--full" ]; then
    n_images=910; size=512; holdout_flags="--n-splits 10"
    audit_flags="--min-group-size 10"; control_flags="--image-size 224 --epochs 10"
else
    n_images=160; size=64; holdout_flags="--quick"
    audit_flags="--min-group-size 5"; control_flags="--image-size 64 --epochs 3 --encoder resnet18 --batch-size 16"
fi

echo "== 1. synthetic dataset: $n_images images, keypoint 3 planted harder for sex F"
$train synth --out "$out/data" --n-images "$n_images" --size "$size" --seed 0

echo "== 2. balanced hold-outs, vanilla and GroupDRO-mitigated models"
$train holdouts --data "$out/data" --attribute sex --out "$out/study" --mitigate $holdout_flags

study="$out/study"
common=(-a sex -a age_group --threshold-mm 0.3 --threshold-mm 0.5 --threshold-mm 1 $audit_flags --seed 0)

echo "== 3. audit (significance on; privacy section on)"
fairlandmark audit "$study/predictions.csv" "$study/meta.csv" "${common[@]}" --privacy \
    --privacy-permutations 100 --json "$out/vanilla.json"
fairlandmark audit "$study/predictions_mitigated.csv" "$study/meta.csv" "${common[@]}" -q \
    --json "$out/mitigated.json"

echo "== 4. privacy: do the errors reveal sex? and the image-classifier control on the same folds"
fairlandmark privacy "$study/predictions.csv" "$study/meta.csv" --target sex --permutations 100 --seed 0 \
    --json "$out/privacy.json"
$train control --data "$out/data" --attribute sex --predictions "$study/predictions.csv" --seed 0 \
    --out "$out/control.json" $control_flags

echo "== 5. compare vanilla with mitigated"
fairlandmark compare "$out/vanilla.json" "$out/mitigated.json" --labels vanilla,mitigated \
    --markdown "$out/compare.md"

echo "== 6. HTML reports: the vanilla model (with privacy), and the mitigated one compared with it"
fairlandmark report "$out/vanilla.json" --html "$out/report_vanilla.html" --markdown "$out/summary_vanilla.md"
fairlandmark report "$out/mitigated.json" --baseline "$out/vanilla.json" --labels vanilla,mitigated \
    --html "$out/report.html" --markdown "$out/summary.md"
echo "done: open $out/report_vanilla.html and $out/report.html"
