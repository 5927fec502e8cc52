#!/bin/bash
# Session 9, GPU call B (issue 13). Carry .whl13 (gpu-wheels.sh fastapi-offline tyro uvloop httptools scipy, no
# bitsandbytes: with it the set is over the 64 MiB a call carries).
# The shipped policy's demo on its GPU default (gpt-85m), three seeds, balanced and loss-first (one seed's
#    verdict is within seed noise, BENCHMARKS.md session 8);
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl13/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p $R; L=$OUT/run.log; date -u > $L; t0=$(date +%s); END=${END:-530}
for obj in balanced loss-first; do
  timeout 215 python3 -m mango_cli demo --seeds 3 --objective $obj --no-progress --out-dir $R/demo-$obj > $R/demo-$obj.log 2>&1
  echo "rc=$? $obj t=$(( $(date +%s)-t0 ))" >> $L
  grep -E "^verdict|^\| (seed|[0-9]|mean) " $R/demo-$obj.log >> $L
done
rm -f $R/demo-*/report.png
tar czf $OUT/logs.tgz -C $R .
