#!/bin/bash
# Session 33 (ask for an H200; CALL_LIMIT ~250; carry .whl13s). Call 69's demo (gpt-85m, balanced, seed 0) trained
# static r0/b3/g0 (the new default: full v, nearest) to +3.1 % over AdamW where the bench's converge recipe had
# -3.6 %. The demo's recipe (batch 16 x 64, lr 3e-4, warm-up 40, weight decay 0.01) in `benchmarks.lm` on the
# GPU: AdamW, r0/b4 and r0/b3 under the new default, r0/b3 rounded stochastically, and the old 3-bit default
# (factored v, stochastic), seeds 0 and 1 as time allows.
source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
lm() {  # NAME ARGS...: one benchmarks.lm run on the demo's recipe, its seed lines to the summary log
  local name=$1; shift
  timeout $(left_s) python3 -m benchmarks.lm --device cuda --model gpt-85m --steps 600 --batch-size 16 \
    --seq-len 64 --lr 3e-4 --warmup-steps 40 --weight-decay 0.01 --threads 8 --seeds ${SEEDS:-0,1} \
    --bench-file $R/lm-$name.md --out-dir $R/lm-$name "$@" > $R/lm-$name.log 2>&1
  step "lm $name" $?; grep -E "^  seed" $R/lm-$name.log >> $L
}
lm auto --settings adamw,r0/b4,r0/b3
lm b3-stoch --settings r0/b3 --rounding stochastic
lm b3-old --settings r0/b3 --rounding stochastic --factor-v yes
finish
