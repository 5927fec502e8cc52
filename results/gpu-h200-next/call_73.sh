#!/bin/bash
# Prepared in session 34 for the next session (ask for an H200; CALL_LIMIT <= 560; carry .whl13s). In order,
# each part only while CALL_LIMIT leaves it time:
# 1. the compiled tests;
# 2. issue 13: GPU traces of today's 2-3 bits (full v, 3 bits nearest) on gpt-85m, which the surrogate has
#    none of (session 34 fitted 2-3 bits on CPU traces only);
# 3. issue 12: where the dearest setting changes spend their first step (the step probe's tables);
# 4. issue 12: the 2-3-bit variants (register cap with the full v; cheaper draws at 2 bits for energy);
# 5. issue 12: the 1B rows of 2-3 bits, rank 64 and gamma at rank 0, never run at 1B with today's core.
source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
gpu_tests
if [ $(left_s) -ge 200 ]; then
  timeout 240 python3 -m mango_cli record --workloads gpu-gpt85m-cosine --seeds 20,21 --device cuda --clock wall \
    --threads 8 --controllers r0/b3/g0,r0/b2/g0,r16/b3/g0.75,r0/b4/g0 --max-wall-min 3.5 --no-progress \
    --out $OUT/gpu-h100-s35.jsonl.gz > $R/record.log 2>&1
  step record $?; tail -2 $R/record.log >> $L
fi
for ch in r0/b32/g0:r16/b3/g0.75 r64/b16/g0:r0/b4/g1; do
  IFS=: read a b <<< "$ch"; n=$(echo $b | tr / -)
  [ $(left_s) -ge 40 ] || break
  timeout 60 python3 -m benchmarks.step_probe --setting $a --switch $b > $R/probe-$n.log 2>&1
  step "probe $a -> $b" $?
done
if [ $(left_s) -ge 60 ]; then
  timeout $(( $(left_s) < 150 ? $(left_s) : 150 )) python3 -m mango_cli bench gpu --out $R/var --parts variants \
    --optimizers "r0/b3,r0/b2" > $R/var.log 2>&1
  step variants $?; cat $R/var/*.md >> $L 2>/dev/null || tail -20 $R/var.log >> $L
fi
if [ $(left_s) -ge 60 ]; then
  timeout $(left_s) python3 -m mango_cli bench gpu --out $R/b1 --model 1b --parts step --energy-window-s 1.0 \
    --optimizers "torch AdamW (fused),r0/b3/g0,r0/b2/g0,r0/b4/g1,r64/b8/g0,r16/b3/g0.75,-torch-path,-unchecked,-full-v,-nearest,-factored,-g0.5" \
    > $R/b1.log 2>&1
  step 1b $?; cat $R/b1/*.md >> $L 2>/dev/null || grep "AdamW" $R/b1.log | tail -10 >> $L
fi
finish
