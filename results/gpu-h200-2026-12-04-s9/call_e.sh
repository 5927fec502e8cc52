#!/bin/bash
# Session 9, GPU call E (issue 13): the NaN of call B after the fix of orthonormalize_batched (a fixed random
# nudge; the leading-diagonal one left a rank-deficient Gram matrix singular). The probe of call D, then the
# demo on three seeds (balanced, then loss-first with what time is left). Carry .whl13.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl13/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p $R; L=$OUT/run.log; date -u > $L; t0=$(date +%s); END=${END:-290}
timeout 60 python3 results/gpu-h200-2026-12-04-s9/nan_probe.py cuda > $R/nan_probe.log 2>&1
echo "rc=$? probe t=$(( $(date +%s)-t0 ))" >> $L; grep -E "^==|non-finite|losses" $R/nan_probe.log | cut -c1-200 >> $L
for obj in balanced loss-first; do
  left=$(( END - ($(date +%s) - t0) )); [ $left -lt 60 ] && { echo "skip $obj" >> $L; continue; }
  timeout $left python3 -m mango_cli demo --seeds 3 --objective $obj --no-progress --out-dir $R/demo-$obj > $R/demo-$obj.log 2>&1
  echo "rc=$? $obj t=$(( $(date +%s)-t0 ))" >> $L
  grep -E "^verdict|^\| (seed|[0-9]|mean|adaptive|adamw|static) " $R/demo-$obj.log >> $L
done
rm -f $R/demo-*/report.png $R/demo-*/decisions-*.jsonl
tar czf $OUT/logs.tgz -C $R .
