#!/bin/bash
# Issue 13's device batch, in one call on one GPU (run from the repo root; OUT = where results go):
# kernel variant sweeps -> their winners made the defaults (bench/apply_winners.py) -> the GPU smoke checks on those
# defaults -> the end-to-end 8-layer prefill at 128k and 1M. Each step is capped so a slow one cannot eat the rest.
export PYTHONUNBUFFERED=1
OUT=${OUT:-bench/results}
step() { local cap=$1 name=$2; shift 2; echo "== $name (cap ${cap}s) $(date +%T)"
  timeout "$cap" "$@" > "$OUT/$name.log" 2>&1; echo "== $name exit $? $(date +%T)"; tail -n "${TAIL:-8}" "$OUT/$name.log"; }
TAIL=4 step 90 lightning python3 bench/lightning_prefill.py --out "$OUT"
TAIL=10 step 110 variants python3 bench/prefill_variants.py --budget 85 --out "$OUT"
python3 bench/apply_winners.py "$OUT" | tee "$OUT/applied.txt"
TAIL=8 step 110 smoke env OUT="$OUT" python3 bench/gpu_smoke.py
TAIL=40 step 200 scale python3 bench/scale.py --layers 8 --batches 1 --prompts 131072 1048576 --chunk 16384 \
  --chunk-sweep --steps 5 --deadline 110 --out "$OUT"
