#!/bin/bash
# Session 12, H200 call 4. Issue 13: the v3 default (s11c) on the H200 demo under memory-first (first run of
# that preset with the v3 policy and the warm-up), 3 seeds, beside AdamW and r0/b8/g0. Carry .whl13.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl13/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p $R; L=$OUT/run.log; date -u > $L; t0=$(date +%s)
timeout 255 python3 -m mango_cli demo --seeds 3 --objective memory-first --no-progress --out-dir $R/demo-memory-first > $R/demo-memory-first.log 2>&1
echo "rc=$? demo memory-first t=$(( $(date +%s)-t0 ))" >> $L; grep -E "kernels compiled|verdict|^\| (adaptive|adamw|static|[0-9]|mean)" $R/demo-memory-first.log >> $L
rm -f $R/demo-*/*.png
tar czf $OUT/logs.tgz -C $R .
