#!/bin/bash
# Session 16, GPU call 1 (issue 13; ran 2026-12-04 19:53 UTC, logs in call1/). s15x21 plays r0/b4/g0 for one interval, then r64/b8/g0, and ends 6 % over
# AdamW's loss under memory-first; the static r64/b4/g0 ends 3 % over. Is that the switch or the 8 bits? No
# static r64/b8/g0 episode was ever recorded on the H200. (1) s15z24 (r64/b8/g0 from the first decision in
# the surrogate) against r64/b4/g0 on gpt-85m; (2) H200 traces of r64/b8/g0 beside r64/b4/g0 for the refit;
# (3) s15z24 under balanced, where the traces rank a rank-64 setting above r0/b8/g0. Carry .whl13.
source results/gpu-h200-next/preamble.sh
END=${END:-590}
P="--policy s15z24 --policy-dir results/policy-s15z24"
DEMO_TIMEOUT=300 demo_mf s15z24-r64b4 r64/b4/g0 $P
left=$(( END - ($(date +%s)-t0) - 175 )); mins=$(python3 -c "print(round(max(0.5, $left/60), 2))")
echo "record budget ${mins} min" >> $L
timeout $(( left + 20 )) python3 -m mango_cli record --workloads gpu-gpt85m-cosine,gpu-lm-medium-cosine,gpu-gpt85m-val-linear \
  --seeds 6,7 --device cuda --clock wall --threads 8 --max-wall-min $mins --seed 16 --no-progress \
  --controllers r64/b8/g0,r64/b4/g0 --out $OUT/gpu-h200-s16.jsonl.gz > $R/record.log 2>&1
step record $?; tail -5 $R/record.log >> $L
left=$(( END - ($(date +%s)-t0) - 10 ))
DEMO_TIMEOUT=$left demo_obj bal-s15z24 balanced r0/b8/g0 $P
finish
