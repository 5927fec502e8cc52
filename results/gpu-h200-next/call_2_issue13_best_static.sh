#!/bin/bash
# Prepared in session 13 (not run). Issue 13: is the surrogate's best static under memory-first right on the
# real job? The held-out GPU workload's best static is r32/b8/g1, the training workloads' r64/b4/g0 and
# r32/b4/g1 (BENCHMARKS.md, session 13). The demo's static run is each in turn; its adaptive run is the default
# again (a second pair of seeds). Then s13h14 (results/policy-s13h14: trained with --depth 0 0.8; in the surrogate
# it beats r0/b8/g0 under memory-first on the held-out GPU workload by 16 %, s13d6 ties; not shipped because its
# CPU validation score is 0.0007 lower) against r0/b8/g0. Carry .whl13. ~580 s: drop a static run if short.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl13/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p $R; L=$OUT/run.log; date -u > $L; t0=$(date +%s)
for s in r32/b8/g1 r64/b4/g0; do
  n=${s//\//-}
  timeout 190 python3 -m mango_cli demo --seeds 2 --objective memory-first --static-setting $s --no-progress \
    --out-dir $R/demo-mf-$n > $R/demo-mf-$n.log 2>&1
  echo "rc=$? demo memory-first static $s t=$(( $(date +%s)-t0 ))" >> $L
  grep -E "verdict|^\| (adaptive|adamw|static|[0-9]|mean)" $R/demo-mf-$n.log >> $L
done
timeout 190 python3 -m mango_cli demo --seeds 2 --objective memory-first --static-setting r0/b8/g0 --no-progress \
  --policy s13h14 --policy-dir results/policy-s13h14 --out-dir $R/demo-mf-s13h14 > $R/demo-mf-s13h14.log 2>&1
echo "rc=$? demo memory-first s13h14 vs static r0/b8/g0 t=$(( $(date +%s)-t0 ))" >> $L
grep -E "verdict|^\| (adaptive|adamw|static|[0-9]|mean)" $R/demo-mf-s13h14.log >> $L
rm -f $R/demo-*/*.png
tar czf $OUT/logs.tgz -C $R .
