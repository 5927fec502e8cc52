#!/bin/bash
# Prepared in session 10 (not run). Issue 13: where the policy's inputs on the H200 demo leave what it was
# trained on. The demo (gpt-85m, lr 3e-4, the shipped policy, balanced, two seeds) now writes
# telemetry*.jsonl; `mango bench obs-shift` sets every token feature beside the surrogate's range for the
# H200 workload (session 10 measured loss_rel out of range on the CPU demo; on the H200 only the loss was
# kept). Then the compiled conversion probes of session 10 with the 4th/5th setting per tensor. Carry
# .whl13 (../shared/tools/gpu-wheels.sh fastapi-offline tyro uvloop httptools scipy, minus bitsandbytes).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl13/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p $R; L=$OUT/run.log; date -u > $L; t0=$(date +%s)
timeout 300 python3 -m mango_cli demo --seeds 2 --objective balanced --no-progress --out-dir $R/demo > $R/demo.log 2>&1
echo "rc=$? demo t=$(( $(date +%s)-t0 ))" >> $L; grep -E "^verdict" $R/demo.log >> $L
timeout 120 python3 -m mango_cli bench obs-shift $R/demo/telemetry*.jsonl --workload gpu-gpt85m-cosine --hardware h200-gpt85m --policy default > $R/obs_shift.md 2>&1
echo "rc=$? obs-shift t=$(( $(date +%s)-t0 ))" >> $L; cat $R/obs_shift.md >> $L
for w in order tensors orth; do timeout 60 python3 results/gpu-h200-2026-12-04-s10/convert_probe.py $w > $R/probe-$w.log 2>&1; done
rm -f $R/demo/report.png
tar czf $OUT/logs.tgz -C $R .
