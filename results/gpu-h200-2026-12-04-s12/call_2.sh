#!/bin/bash
# Session 12, H200 call 2. Issue 12: the register cap alone against early loads with it (call 1 had early
# loads only at 72 / 96 / none), rank 0 at 8, 16 and 4 bits; the fused-vs-torch tests with EARLY_LOADS on
# (one process), and how far early loads move the bits on the GPU (call 1: not bit-identical there). Issue 13:
# the v3 default on the demo under loss-first (3 seeds, kernels compiled first). Carry .whl13.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl13/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p $R; L=$OUT/run.log; date -u > $L; t0=$(date +%s)
timeout 170 python3 -m mango_cli bench gpu --out $R/var --parts variants --optimizers "r0/b8,r0/b16,r0/b4/g0,r4/b8" > $R/variants.log 2>&1
echo "rc=$? variants t=$(( $(date +%s)-t0 ))" >> $L; cat $R/var/*.md >> $L 2>/dev/null || grep "step_ms" $R/variants.log >> $L
timeout 100 python3 -c "
import sys, client.compression.fused as f, pytest
f.EARLY_LOADS = True
sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', 'tests/client/test_fused.py', '-k', 'matches_torch or tracks_torch or grid_matches or whole_block']))
" > $R/tests_early.log 2>&1
echo "rc=$? tests with EARLY_LOADS t=$(( $(date +%s)-t0 ))" >> $L; tail -4 $R/tests_early.log >> $L
timeout 60 python3 -m pytest -q -p no:cacheprovider tests/client/test_fused.py -k early_loads -x > $R/early_diff.log 2>&1
grep -E "Mismatch|Greatest|mismatched" $R/early_diff.log | head >> $L
timeout 290 python3 -m mango_cli demo --seeds 3 --objective loss-first --no-progress --out-dir $R/demo-loss-first > $R/demo-loss-first.log 2>&1
echo "rc=$? demo loss-first t=$(( $(date +%s)-t0 ))" >> $L; grep -E "kernels compiled|verdict|^\| (adaptive|adamw|static|[0-9]|mean)" $R/demo-loss-first.log >> $L
rm -f $R/demo-*/*.png
tar czf $OUT/logs.tgz -C $R .
