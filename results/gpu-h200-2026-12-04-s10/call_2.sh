#!/bin/bash
# Session 10, GPU call 2. (a) Why test_fused_runs_continue_after_batched_changes failed in call 1
# (convert_diag.py: the run-to-run difference of the fused chain on this device beside batched vs
# per-tensor). (b) Issue 13: the demo on the GPU default (gpt-85m, lr 3e-4) with the policy retrained on the
# refitted surrogate (POLICY, artifacts in POLICY_DIR), three seeds, each preset of PRESETS in turn.
# Carry .whl13 (no bitsandbytes: the demo does not use it).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl13/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p $R; L=$OUT/run.log; date -u > $L; t0=$(date +%s); END=${END:-585}
POLICY=${POLICY:-default}; POLICY_DIR=${POLICY_DIR:-}; PRESETS=${PRESETS:-balanced loss-first}
if [ -n "$DIAG" ]; then
  timeout 90 python3 results/gpu-h200-2026-12-04-s10/convert_diag.py > $R/convert_diag.log 2>&1
  echo "rc=$? diag t=$(( $(date +%s)-t0 ))" >> $L; cat $R/convert_diag.log | cut -c1-300 >> $L
fi
for obj in $PRESETS; do
  left=$(( END - ($(date +%s) - t0) )); [ $left -lt 60 ] && { echo "skip $obj" >> $L; continue; }
  timeout $left python3 -m mango_cli demo --seeds 3 --objective $obj --policy $POLICY ${POLICY_DIR:+--policy-dir $POLICY_DIR} \
    --no-progress --out-dir $R/demo-$obj > $R/demo-$obj.log 2>&1
  echo "rc=$? $obj t=$(( $(date +%s)-t0 ))" >> $L
  grep -E "^verdict|^\| (seed|[0-9]|mean|adaptive|adamw|static) " $R/demo-$obj.log >> $L
done
rm -f $R/demo-*/report.png
tar czf $OUT/logs.tgz -C $R .
