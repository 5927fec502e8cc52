#!/bin/bash
# Prepared in session 11 (not run). Issue 13: the verdict of the v3 default (s11c) on the H200 demo with the
# kernels compiled before the timed runs (demo.runs.warm_up; session 11's call 3 was cut after one seed).
# Three seeds, balanced then loss-first; each run's per-interval times are in summary.json. One preset with
# 3 seeds takes ~200 s on a fresh machine (session 11: 2 seeds of balanced timed out at 190 s there).
# Carry .whl13 (../shared/tools/gpu-wheels.sh fastapi-offline tyro uvloop httptools scipy, minus bitsandbytes).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl13/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p $R; L=$OUT/run.log; date -u > $L; t0=$(date +%s)
for o in balanced loss-first; do
  timeout 270 python3 -m mango_cli demo --seeds 3 --objective $o --no-progress --out-dir $R/demo-$o > $R/demo-$o.log 2>&1
  echo "rc=$? demo $o t=$(( $(date +%s)-t0 ))" >> $L; grep -E "kernels compiled|verdict|^\| (adaptive|adamw|static|[0-9]|mean)" $R/demo-$o.log >> $L
done
rm -f $R/demo-*/*.png
tar czf $OUT/logs.tgz -C $R .
