#!/bin/bash
# GPU call 1 (2026-12-02 session 2): compiled fused tests, H200 cost profiles, GPU traces.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
L=$OUT/run.log
date -u > $L; nvidia-smi --query-gpu=name,power.limit,clocks.max.sm --format=csv >> $L
t0=$(date +%s)
(timeout 110 python3 -m pytest -q -p no:cacheprovider tests/client/test_fused.py -x) > $OUT/tests.log 2>&1; echo "tests rc=$? t=$(( $(date +%s)-t0 ))" >> $L
(timeout 120 python3 -m mango_cli profile --model gpt-85m --device cuda --batch-size 16 --seq-len 256 --force --out $OUT/h200-gpt85m.json) >> $L 2>&1; echo "prof1 rc=$? t=$(( $(date +%s)-t0 ))" >> $L
(timeout 120 python3 -m mango_cli profile --model lm-medium --device cuda --batch-size 32 --seq-len 256 --force --out $OUT/h200-lm-medium.json) >> $L 2>&1; echo "prof2 rc=$? t=$(( $(date +%s)-t0 ))" >> $L
left=$(( 570 - ($(date +%s)-t0) )); mins=$(python3 -c "print(round(max(0.5, ($left-25)/60), 2))")
echo "record budget ${mins} min" >> $L
(timeout $left python3 -m mango_cli record --workloads gpu --seeds 0,1 --device cuda --clock wall --threads 8 --budget-min $mins --max-wall-min $mins --out $OUT/gpu-h200.jsonl.gz) > $OUT/record.log 2>&1; echo "record rc=$? t=$(( $(date +%s)-t0 ))" >> $L
ls -la $OUT >> $L
