#!/bin/bash
# Session 16, GPU call 3 (ran 2026-12-04 20:58 UTC with CAND=s16c28, logs in call3/). (a) Issue 12: `pytest -m gpu` over the tree outside the kernel files (the kernel
# files last ran compiled in session 14 on the unchanged core; test_fuzz/test_hardening need wheels .whl13
# lacks). (b) Issue 13: CAND (a retrain with a weak bits prior, `--prior-logit 3 1 3`; optional) under
# memory-first against r64/b4/g0 on gpt-85m, then loss-first against the floor. (c) Paired H200 traces of
# r64/b8/g0 and r64/b4/g0 (one job seed for both) for the next refit, in whatever time is left. Carry .whl13.
source results/gpu-h200-next/preamble.sh
END=${END:-585}
timeout 90 python3 -m pytest -q -p no:cacheprovider -m gpu tests/ --ignore=tests/client/test_fused.py \
  --ignore=tests/client/test_convert.py --ignore=tests/client/test_quant.py --ignore=tests/client/test_kernels.py \
  --ignore=tests/client/test_lowrank.py --ignore=tests/policy_service/test_fuzz.py \
  --ignore=tests/policy_service/test_hardening.py > $R/tests_gpu_marked.log 2>&1
step "pytest -m gpu" $?; tail -3 $R/tests_gpu_marked.log >> $L
if [ -n "$CAND" ]; then
  P="--policy $CAND --policy-dir results/policy-$CAND"
  DEMO_TIMEOUT=300 demo_mf $CAND-r64b4 r64/b4/g0 $P
  DEMO_TIMEOUT=150 demo_obj lf-$CAND loss-first r0/b8/g0 $P
fi
left=$(( END - ($(date +%s)-t0) - 15 )); mins=$(python3 -c "print(round(max(0.5, $left/60), 2))")
echo "record budget ${mins} min" >> $L
timeout $(( left + 10 )) python3 -m mango_cli record --workloads gpu-gpt85m-cosine,gpu-lm-medium-cosine,gpu-gpt85m-val-linear \
  --seeds 8 --device cuda --clock wall --threads 8 --max-wall-min $mins --seed 17 --no-progress \
  --controllers r64/b8/g0,r64/b4/g0 --out $OUT/gpu-h200-s16b.jsonl.gz > $R/record.log 2>&1
step record $?; tail -3 $R/record.log >> $L
finish
