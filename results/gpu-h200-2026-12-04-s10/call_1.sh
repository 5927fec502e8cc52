#!/bin/bash
# Session 10, GPU call 1. (a) The compiled kernel tests after session 9's core changes (orthonormalization
# nudge and fallback, rows= for the DDP hook, the vectorized plan tables). (b) Issue 13 part 2: more H200
# traces with rank 0 and projected settings side by side, so the surrogate's refit sees what projection costs
# on the 85 M model at its stable lr (the three recorded GPU workloads had 2-3 episodes each). Carry .whl.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p $R; L=$OUT/run.log; date -u > $L; t0=$(date +%s); END=${END:-585}
nvidia-smi --query-gpu=name,driver_version,power.limit --format=csv >> $L
timeout 120 python3 -m pytest -q -n 4 -p no:cacheprovider -rf --tb=short tests/client/test_fused.py \
  tests/client/test_convert.py tests/client/test_quant.py tests/client/test_kernels.py tests/client/test_lowrank.py \
  > $R/tests.log 2>&1
echo "rc=$? tests t=$(( $(date +%s)-t0 ))" >> $L; tail -3 $R/tests.log >> $L
left=$(( END - ($(date +%s)-t0) - 25 )); mins=$(python3 -c "print(round(max(0.5, $left/60), 2))")
echo "record budget ${mins} min" >> $L
timeout $(( left + 20 )) python3 -m mango_cli record --workloads gpu-gpt85m-cosine,gpu-lm-medium-cosine,gpu-gpt85m-val-linear \
  --seeds 0,1,2,3 --device cuda --clock wall --threads 8 --max-wall-min $mins --seed 10 --no-progress \
  --controllers r0/b8/g0,r64/b8/g0.25,r0/b4/g0,r32/b4/g0.25,random,r16/b8/g0.5,random-sticky,r64/b4/g0 \
  --out $OUT/gpu-h200-s10.jsonl.gz > $R/record.log 2>&1
echo "rc=$? record t=$(( $(date +%s)-t0 ))" >> $L; tail -5 $R/record.log >> $L
tar czf $OUT/logs.tgz -C $R .
