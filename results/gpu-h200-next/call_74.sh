#!/bin/bash
# Session 35 (carry .whl13s; CALL_LIMIT <= 560). Session 34's call_73.sh's questions (that script never ran
# and is gone) with the energy of the missed rows' variants first; every part after the tests runs only
# while CALL_LIMIT leaves it time:
# 1. the compiled tests (session 34's review commit and session 35's meter poll have not run on a GPU);
# 2. issue 12: energy per step of the missed rows' variants (`--parts variants` now measures energy):
#    2 bits with hash draws or rounded to nearest, rank 64's refresh every 200 steps;
# 3. issue 13: GPU traces of today's 2-3 bits on gpt-85m (none exist; needed before a retrain);
# 4. issue 12: the step probe of the two dearest setting changes.
source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
gpu_tests
if [ $(left_s) -ge 100 ]; then
  timeout 150 python3 -m mango_cli bench gpu --out $R/var --parts variants --energy-window-s 1.0 \
    --optimizers "r0/b2/g0|,r0/b2/g0|DRAWS=hash,r0/b2/g0|stochastic_rounding=False,r64/b8/g0|,r64/b8/g0|refresh_every=200,r64/b8/g0|refresh_every=10000,r64/b16/g1|,r64/b16/g1|refresh_every=200,r0/b4/g1|" \
    > $R/var.log 2>&1
  step variants $?; cat $R/var/*.md >> $L 2>/dev/null || tail -20 $R/var.log >> $L
fi
if [ $(left_s) -ge 200 ]; then
  timeout 230 python3 -m mango_cli record --workloads gpu-gpt85m-cosine --seeds 20,21 --device cuda --clock wall \
    --threads 8 --controllers r0/b3/g0,r0/b2/g0,r16/b3/g0.75,r0/b4/g0 --max-wall-min 3.3 --no-progress \
    --out $OUT/gpu-s35.jsonl.gz > $R/record.log 2>&1
  step record $?; tail -2 $R/record.log >> $L
fi
for ch in r0/b32/g0:r16/b3/g0.75 r64/b16/g0:r0/b4/g1; do
  IFS=: read a b <<< "$ch"; n=$(echo $b | tr / -)
  [ $(left_s) -ge 40 ] || break
  timeout 60 python3 -m benchmarks.step_probe --setting $a --switch $b > $R/probe-$n.log 2>&1
  step "probe $a -> $b" $?
done
finish
