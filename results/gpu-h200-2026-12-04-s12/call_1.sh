#!/bin/bash
# Session 12, H200 call 1. Issue 12: (a) the compiled kernel tests on the current core, with the new
# early-loads test; (b) where rank 0's step spends its device time, kernel by kernel (step_probe --kernels),
# with and without every tile load issued first (fused.EARLY_LOADS); (c) the variants part (rank 0 rows and the
# early-loads rows beside fused AdamW in one run). Issue 13, if time is left: the v3 default on the demo
# (balanced, 3 seeds, kernels compiled before the timed runs). Carry .whl13.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl13/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p $R; L=$OUT/run.log; date -u > $L; t0=$(date +%s); nvidia-smi -L >> $L
timeout 150 python3 -m pytest -q -n 4 -p no:cacheprovider tests/client/test_fused.py tests/client/test_convert.py \
  tests/client/test_quant.py tests/client/test_kernels.py tests/client/test_lowrank.py > $R/tests.log 2>&1
echo "rc=$? tests t=$(( $(date +%s)-t0 ))" >> $L; tail -4 $R/tests.log >> $L
for s in r0/b8/g0 r0/b4/g0; do for e in "" --early-loads; do
  timeout 60 python3 -m benchmarks.step_probe --setting $s --steps 40 --kernels $e > $R/probe.log.tmp 2>&1
  echo "rc=$? probe $s $e t=$(( $(date +%s)-t0 ))" >> $L; cat $R/probe.log.tmp >> $R/probe.log; grep -vE "^\s*$|Warning|warn" $R/probe.log.tmp | tail -14 >> $L
done; done
timeout 280 python3 -m mango_cli bench gpu --out $R/var --parts variants --optimizers "r0/,r4/b8,r64/b8" > $R/variants.log 2>&1
echo "rc=$? variants t=$(( $(date +%s)-t0 ))" >> $L; cat $R/var/*.md >> $L 2>/dev/null || grep "step_ms" $R/variants.log >> $L
left=$(( 580 - ($(date +%s)-t0) )); echo "left $left" >> $L
if [ $left -gt 200 ]; then
  timeout $left python3 -m mango_cli demo --seeds 3 --objective balanced --no-progress --out-dir $R/demo-balanced > $R/demo-balanced.log 2>&1
  echo "rc=$? demo balanced t=$(( $(date +%s)-t0 ))" >> $L; grep -E "kernels compiled|verdict|^\| (adaptive|adamw|static|[0-9]|mean)" $R/demo-balanced.log >> $L
fi
rm -f $R/demo-*/*.png $R/probe.log.tmp
tar czf $OUT/logs.tgz -C $R .
