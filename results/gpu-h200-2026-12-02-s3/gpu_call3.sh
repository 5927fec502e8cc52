#!/bin/bash
# GPU call 3: the demo on the H200 with the retrained default policy (issue 13): gpt-85m under balanced and
# loss-first, lm-medium under balanced.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
L=$OUT/run.log; t0=$(date +%s); END=${END:-370}
left() { echo $(( END - ($(date +%s)-t0) )); }
step() { local cap=$1; shift; local l=$(left); local t=$(( cap < l ? cap : l )); if [ $t -lt 20 ]; then echo "skip $*" >> $L; return; fi; timeout $t "$@"; echo "rc=$? t=$(( $(date +%s)-t0 )) :: $*" >> $L; }
date -u > $L
step 140 python3 -m mango_cli demo --out-dir /tmp/d-bal --objective balanced --no-progress > $OUT/demo-bal.log 2>&1
step 140 python3 -m mango_cli demo --out-dir /tmp/d-lf --objective loss-first --no-progress > $OUT/demo-lf.log 2>&1
step 140 python3 -m mango_cli demo --model lm-medium --batch-size 32 --seq-len 256 --out-dir /tmp/d-lm --objective balanced --no-progress > $OUT/demo-lm.log 2>&1
for d in bal lf lm; do cp /tmp/d-$d/summary.md $OUT/summary-$d.md 2>/dev/null; done
cp /tmp/d-bal/decisions.jsonl $OUT/decisions-bal.jsonl 2>/dev/null
