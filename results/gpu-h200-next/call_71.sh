#!/bin/bash
# Prepared in session 33 for the next session (ask for an H200; CALL_LIMIT <= 540; carry .whl13s). In order:
# 1. the compiled tests (on an H200 for the first time since session 31 if one comes);
# 2. issue 13: the lm-medium profile again with the NVML windows aligned to the counter's moves (session 33;
#    call 69's file read 1x or 2x AdamW's energy whatever the setting), and gpt-85m's;
# 3. issue 12: the 2-3-bit kernels' register cap with the full v (tuned for the factored v), and the energy
#    rows still missed (r0/b4/g1, rank 64, r0/b2) with 2 s windows;
# 4. issue 13: call 70's question, 3 bits on the GPU demo job's recipe (two seeds), in the time left.
source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
gpu_tests
for m in lm-medium:32:64 gpt-85m:16:256; do
  IFS=: read model batch seq <<< "$m"
  timeout 150 python3 -m mango_cli profile --model $model --batch-size $batch --seq-len $seq --force --device cuda \
    --out $OUT/prof-$model.json > $R/prof-$model.log 2>&1
  step prof-$model $?; grep -E "r0/b(8|4|3)/g0 |wrote" $R/prof-$model.log >> $L
done
timeout 150 python3 -m mango_cli bench gpu --out $R/var --parts variants --optimizers "r0/b3,r0/b2" > $R/var.log 2>&1
step variants $?; cat $R/var/*.md >> $L 2>/dev/null || tail -20 $R/var.log >> $L
timeout 120 python3 -m mango_cli bench gpu --out $R/energy --parts step --energy-window-s 2.0 \
  --optimizers "torch AdamW (fused),r0/b4/g1,r64/b8/g0,r64/b16/g1,r0/b2/g0,-torch-path,-unchecked,-full-v,-nearest,-factored" \
  > $R/energy.log 2>&1
step energy $?; cat $R/energy/*.md >> $L 2>/dev/null || tail -20 $R/energy.log >> $L
lm() {  # NAME ARGS...: one benchmarks.lm run on the demo's recipe (as call_70.sh), its seed lines to the log
  local name=$1; shift
  timeout $(left_s) python3 -m benchmarks.lm --device cuda --model gpt-85m --steps 600 --batch-size 16 \
    --seq-len 64 --lr 3e-4 --warmup-steps 40 --weight-decay 0.01 --threads 8 --seeds 0,1 \
    --bench-file $R/lm-$name.md --out-dir $R/lm-$name "$@" > $R/lm-$name.log 2>&1
  step "lm $name" $?; grep -E "^  seed" $R/lm-$name.log >> $L
}
[ $(left_s) -ge 60 ] && lm auto --settings adamw,r0/b4,r0/b3
[ $(left_s) -ge 40 ] && lm b3-old --settings r0/b3 --rounding stochastic --factor-v yes
finish
