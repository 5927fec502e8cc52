#!/bin/bash
# Prepared in session 8 (not run). Issue 13's goal is judged on the demo's verdict, and one seed's verdict is
# within seed noise (BENCHMARKS.md, session 8). The shipped policy on the demo's GPU default (gpt-85m), three
# seeds, under balanced and loss-first: 2 x 9 runs of 600 steps, ~4-5 min in all. Carry .whl (gpu-wheels.sh
# fastapi-offline tyro uvloop httptools).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p $R; L=$OUT/run.log; date -u > $L
for obj in balanced loss-first; do
  timeout 280 python3 -m mango_cli demo --seeds 3 --objective $obj --no-progress --out-dir $R/demo-$obj > $R/demo-$obj.log 2>&1
  echo "rc=$? $obj t=$(date -u +%T)" >> $L
  grep -E "^verdict|^\| (seed|[0-9]|mean) " $R/demo-$obj.log >> $L
done
rm -f $R/demo-*/report.png
tar czf $OUT/logs.tgz -C $R .
