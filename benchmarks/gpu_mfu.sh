#!/bin/bash
# MFU of the small (~125M) and ~1B configs on one accelerator, bf16 and fp32, through train_throughput.py.
#   bash benchmarks/gpu_mfu.sh [OUTDIR]      (needs `pip install -e . "jax[cuda12]"` on the GPU host)
# Peak = a jitted 8192^3 matmul timed in the same process; model FLOPs = 6N + attention (see train_throughput).
set -euo pipefail
out=${1:-.}
cd "$(dirname "$0")/.."
python -c "import jax; assert jax.devices()[0].platform == 'gpu', jax.devices()" || { echo "no GPU visible to JAX"; exit 1; }
python benchmarks/train_throughput.py --platform cuda --config small --devices 1 --dtype bfloat16 float32 \
  --steps 20 --override data.tokenizer=byte --out "$out/mfu_small.json"
python benchmarks/train_throughput.py --platform cuda --config llama_1b --devices 1 --dtype bfloat16 \
  --steps 10 --override data.tokenizer=byte --out "$out/mfu_1b.json"
