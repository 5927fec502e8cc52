#!/bin/bash
# Session 11, H200 call 1. (a) The compiled kernel tests on the final core (session 10's refactor 24a203b and
# the relaxed conversion allowance never ran on a GPU). (b) Issue 13: the v3 default policy (s11c) on the H200
# demo (gpt-85m, lr 3e-4, NVML) under balanced and loss-first, 2 seeds each, beside AdamW and r0/b8/g0; then
# the candidate s11b (better validation score, fails the surrogate floor on the GPU workload) under balanced;
# the default's telemetry beside the surrogate's ranges (`mango bench obs-shift`). (c) Issue 12: the
# 1B-parameter step rows if time is left. Carry .whl13.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl13/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p $R; L=$OUT/run.log; date -u > $L; t0=$(date +%s); nvidia-smi -L >> $L
timeout 140 python3 -m pytest -q -n 4 -p no:cacheprovider tests/client/test_fused.py tests/client/test_convert.py \
  tests/client/test_quant.py tests/client/test_kernels.py tests/client/test_lowrank.py > $R/tests.log 2>&1
echo "rc=$? tests t=$(( $(date +%s)-t0 ))" >> $L; tail -4 $R/tests.log >> $L
demo() {  # name objective extra-args...
  local n=$1 o=$2; shift 2
  timeout 130 python3 -m mango_cli demo --seeds 2 --objective $o --no-progress --out-dir $R/demo-$n-$o "$@" > $R/demo-$n-$o.log 2>&1
  echo "rc=$? demo $n $o t=$(( $(date +%s)-t0 ))" >> $L; grep -E "verdict|^\| (adaptive|adamw|static)|by \{|^objective" $R/demo-$n-$o.log | tail -14 >> $L
}
demo s11c balanced
demo s11c loss-first
demo s11b balanced --policy s11b --policy-dir results/gpu-h200-2026-12-04-s11/policy-s11b
timeout 40 python3 -m mango_cli bench obs-shift $R/demo-s11c-balanced/telemetry*.jsonl --workload gpu-gpt85m-cosine --hardware h200-gpt85m --policy default > $R/obs_shift.md 2>&1
echo "rc=$? obs-shift t=$(( $(date +%s)-t0 ))" >> $L; head -22 $R/obs_shift.md >> $L
left=$(( 565 - ($(date +%s)-t0) )); [ $left -gt 40 ] && timeout $left python3 -m mango_cli bench gpu --out $R/g1b --parts step --model 1b --energy-window-s 0.3 \
  --optimizers "torch AdamW,MangoAdamW r0/b8/g0,MangoAdamW r0/b4/g0,MangoAdamW r4/b8/g0" > $R/step1b.log 2>&1
echo "rc=$? 1b t=$(( $(date +%s)-t0 ))" >> $L; cat $R/g1b/*.md >> $L 2>/dev/null; tail -3 $R/step1b.log >> $L
rm -f $R/demo-*/*.png
tar czf $OUT/logs.tgz -C $R .
