#!/bin/bash
# Session 15, GPU call 1 (issue 13 part 2): H200 traces of the settings the memory-first demo ranks first
# (r64/b4/g0, J 0.200 on gpt-85m) and of the gamma settings the surrogate overrates there (r32/b8/g1 scored
# J 0.346 with its final loss +11 % over AdamW; the surrogate says +4 %). No static rank-64 4-bit and no
# gamma-1 episode was ever recorded on the H200. Run from the repository root, .whl13 carried.
source results/gpu-h200-next/preamble.sh
END=${END:-585}
nvidia-smi --query-gpu=name,driver_version,power.limit --format=csv >> $L
left=$(( END - ($(date +%s)-t0) - 25 )); mins=$(python3 -c "print(round(max(0.5, $left/60), 2))")
echo "record budget ${mins} min" >> $L
timeout $(( left + 20 )) python3 -m mango_cli record --workloads gpu-gpt85m-cosine,gpu-lm-medium-cosine,gpu-gpt85m-val-linear \
  --seeds 4,5 --device cuda --clock wall --threads 8 --max-wall-min $mins --seed 15 --no-progress \
  --controllers r64/b4/g0,r32/b8/g1,r16/b8/g1,r32/b4/g1,r32/b8/g0,r64/b4/g0.5,r16/b4/g0,random-sticky \
  --out $OUT/gpu-h200-s15.jsonl.gz > $R/record.log 2>&1
step record $?; tail -5 $R/record.log >> $L
finish
