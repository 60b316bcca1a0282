#!/usr/bin/env bash
# The GPU checks of the reference model, for a machine with CUDA (never CI).
#
#   bash benchmarks/gpu_session.sh tests   # CUDA tests + the reference-model suite on that machine (~5 min)
#   bash benchmarks/gpu_session.sh bench   # train_throughput.py at 512x512, with --compile (~8 min on an H100)
#
# Results go to $OUT (the device tool's folder) or ./gpu_results. The machine needs
# torch, timm and torchvision; segmentation-models-pytorch, when missing, is installed
# from a wheel in .whl/ (pure Python; on a machine with pip access:
#   pip download --no-deps -d .whl segmentation-models-pytorch==0.6.0).
set -euo pipefail
stage="${1:-tests}"
out="${OUT:-gpu_results}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if ! python3 -c "import segmentation_models_pytorch" 2>/dev/null; then
    ls .whl/segmentation_models_pytorch-*.whl >/dev/null 2>&1 || {
        echo "error: segmentation-models-pytorch is not installed and no wheel is in .whl/; see the header" >&2
        exit 2
    }
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl
    export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
nvidia-smi -L 2>/dev/null || echo "nvidia-smi: not found (no NVIDIA driver here)"
python3 -c "import torch, segmentation_models_pytorch as smp; print('torch', torch.__version__, 'smp', smp.__version__,
'cuda', torch.cuda.is_available())"

case "$stage" in
    tests)
        python3 -m pytest -q -p no:cacheprovider -o addopts="" tests/test_reference_gpu.py \
            tests/test_reference_model.py tests/test_reference_groupdro.py 2>&1 | tee "$out/gpu_tests.log"
        ;;
    bench)
        python3 benchmarks/train_throughput.py --compile --json "$out/train_throughput.json" 2>&1 \
            | grep -v "^W[0-9]" | tee "$out/train_throughput.log"
        ;;
    *)
        echo "error: unknown stage '$stage'; use tests or bench" >&2
        exit 2
        ;;
esac
