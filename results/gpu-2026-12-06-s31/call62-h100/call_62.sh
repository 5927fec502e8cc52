#!/bin/bash
# Session 31. Issue 12: `pytest -m gpu` and the fused tests compiled at the session-30 defaults (4 bits: full v,
# uniform code; review commit 69d119d), not yet compiled anywhere. Issue 13: the cost profiles of gpt-85m and
# lm-medium re-measured with today's core (the shipped ones timed the old 4-bit step), then rank-0 / rank-64
# episodes at 4 and 8 bits recorded with today's core (the surrogate's 4-bit loss learned from factored-v
# traces) in what is left of CALL_LIMIT. ~540 s; carry .whl13s.
source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
gpu_tests
timeout 120 python3 -m mango_cli profile --model gpt-85m --seq-len 256 --batch-size 16 --force --device cuda \
  --out $OUT/prof-gpt85m.json > $R/prof-gpt85m.log 2>&1
step prof-gpt85m $?; tail -3 $R/prof-gpt85m.log >> $L
timeout 90 python3 -m mango_cli profile --model lm-medium --batch-size 32 --force --device cuda \
  --out $OUT/prof-lm-medium.json > $R/prof-lm-medium.log 2>&1
step prof-lm-medium $?; tail -3 $R/prof-lm-medium.log >> $L
left=$(left_s); wall=$(python3 -c "print(round(($left - 25) / 60, 2))")
timeout $left python3 -m mango_cli record --workloads gpu-gpt85m-cosine,gpu-gpt85m-val-linear \
  --seeds 10,11,12,13 --device cuda --clock wall --threads 8 --max-wall-min $wall --seed 31 --no-progress \
  --controllers r0/b4/g0,r0/b8/g0,r64/b4/g0 --out $OUT/gpu-s31.jsonl.gz > $R/record.log 2>&1
step record $?; tail -5 $R/record.log >> $L
finish
