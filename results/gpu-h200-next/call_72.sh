#!/bin/bash
# Session 34 (carry .whl13s and .old; CALL_LIMIT <= 560). call_71.sh's questions, with the setting-change cost
# of session 34's changes first; every part after the tests runs only while CALL_LIMIT leaves it time.
# .old/ holds session 33's client/compression/fused.py and optimizer.py
# (`git show fd9616e:client/compression/fused.py > .old/fused.py`, the same for optimizer.py).
# 1. the compiled tests (the device-built program tables' new GPU test, the batched bf16 stores);
# 2. issue 12: `mango bench gpu --parts switch` with session 33's two files, then today's;
# 3. issue 13: the lm-medium and gpt-85m profiles with the NVML windows aligned to the counter's moves;
# 4. issue 12: the missed energy rows with 2 s windows; the step probe's tables of two changes; the 2-3-bit
#    register-cap variants.
source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
gpu_tests
switch() {  # NAME: the switch part's table to the summary log
  timeout 90 python3 -m mango_cli bench gpu --out $R/switch-$1 --parts switch > $R/switch-$1.log 2>&1
  step "switch $1" $?; cat $R/switch-$1/*.md >> $L 2>/dev/null || tail -5 $R/switch-$1.log >> $L
}
mkdir -p /tmp/new && cp client/compression/fused.py client/compression/optimizer.py /tmp/new/
cp .old/fused.py .old/optimizer.py client/compression/ && switch old
cp /tmp/new/fused.py /tmp/new/optimizer.py client/compression/ && switch new
for m in lm-medium:32:64 gpt-85m:16:256; do
  IFS=: read model batch seq <<< "$m"
  [ $(left_s) -ge 60 ] || break
  timeout 150 python3 -m mango_cli profile --model $model --batch-size $batch --seq-len $seq --force --device cuda \
    --out $OUT/prof-$model.json > $R/prof-$model.log 2>&1
  step prof-$model $?; grep -E "AdamW|r0/b(8|4|3)/g0 |wrote" $R/prof-$model.log >> $L
done
if [ $(left_s) -ge 60 ]; then
  timeout $(( $(left_s) < 120 ? $(left_s) : 120 )) python3 -m mango_cli bench gpu --out $R/energy --parts step \
    --energy-window-s 2.0 --optimizers "torch AdamW (fused),r0/b4/g1,r64/b8/g0,r64/b16/g1,r0/b2/g0,-torch-path,-unchecked,-full-v,-nearest,-factored" \
    > $R/energy.log 2>&1
  step energy $?; cat $R/energy/*.md >> $L 2>/dev/null || tail -20 $R/energy.log >> $L
fi
for ch in r0/b32/g0:r16/b3/g0.75 r16/b3/g0.75:r0/b8/g0; do
  IFS=: read a b <<< "$ch"; n=$(echo $b | tr / -)
  [ $(left_s) -ge 40 ] || break
  timeout 60 python3 -m benchmarks.step_probe --setting $a --switch $b > $R/probe-$n.log 2>&1
  step "probe $a -> $b" $?
done
if [ $(left_s) -ge 60 ]; then
  timeout $(left_s) python3 -m mango_cli bench gpu --out $R/var --parts variants --optimizers "r0/b3,r0/b2" > $R/var.log 2>&1
  step variants $?; cat $R/var/*.md >> $L 2>/dev/null || tail -20 $R/var.log >> $L
fi
finish
