#!/bin/bash
# Prepared in session 9 (not run). Issue 13's headline, measured properly for the first time: the shipped
# policy's demo on the GPU default (gpt-85m) at its stable lr (--lr 0 -> 3e-4, session 9) with the
# orthonormalization fix (session 9: 5 of 6 adaptive runs went NaN before it), three seeds, balanced then
# loss-first (a demo objective of 3 seeds x 3 runs took ~160-210 s on the H200). Carry .whl13
# (../shared/tools/gpu-wheels.sh fastapi-offline tyro uvloop httptools scipy, then delete .whl13's
# bitsandbytes wheel: with it the set is over the 64 MiB a call carries). Keep at most 8 files under $OUT.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl13/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p $R; L=$OUT/run.log; date -u > $L; t0=$(date +%s); END=${END:-560}
for obj in balanced loss-first; do
  left=$(( END - ($(date +%s) - t0) )); [ $left -lt 60 ] && { echo "skip $obj" >> $L; continue; }
  timeout $left python3 -m mango_cli demo --seeds 3 --objective $obj --no-progress --out-dir $R/demo-$obj > $R/demo-$obj.log 2>&1
  echo "rc=$? $obj t=$(( $(date +%s)-t0 ))" >> $L
  grep -E "^verdict|^\| (seed|[0-9]|mean|adaptive|adamw|static) " $R/demo-$obj.log >> $L
done
rm -f $R/demo-*/report.png $R/demo-*/decisions-*.jsonl
tar czf $OUT/logs.tgz -C $R .
