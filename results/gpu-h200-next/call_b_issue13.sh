#!/bin/bash
# Prepared in session 8 (no device time was left: not run). Issue 13: what a setting costs in loss on the demo's
# GPU job, over seeds, and whether the demo's learning rate is AdamW's. The demo's gpt-85m recipe (batch 16 x 64,
# 600 steps, warm-up 40, cosine to 10 %) at lr 3e-3 (the demo's), 3e-4 (the recorded gpu-gpt85m workloads') and,
# time permitting, 1e-3; three seeds, the same batches for
# every setting of a seed. Session 8 on the CPU (lm-small): at lr 3e-3 AdamW's final val loss spread by 0.43
# nats over three seeds and projected settings ended 7-16 % below it; that confound must be ruled out on the GPU.
# Carry .whl made by ../shared/tools/gpu-wheels.sh scipy, then delete .whl/bitsandbytes-* (not needed here): with
# both the wheels are 89 MB, over the 64 MiB a call carries (measured in session 8). The seeds table's CIs need
# scipy; without it the table fails at the end, but the JSON (rewritten after every run) keeps every run.
# Afterwards, on the CPU: mango bench sim2real <the two results/lm-*.json> --per-setting --map gpt-85m=gpu-gpt85m-cosine
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p $R; L=$OUT/run.log; date -u > $L
S=adamw,r0/b8,r64/b8/g0.25,r64/b4/g0.25,r32/b4/g0.25
t0=$(date +%s)
for lr in 3e-3 3e-4 1e-3; do
  left=$(( 570 - ($(date +%s) - t0) )); [ $left -lt 60 ] && { echo "skip lr=$lr" >> $L; continue; }
  timeout $left python3 -m mango_cli bench lm --device cuda --model gpt-85m --steps 600 --batch-size 16 --seq-len 64 \
    --warmup-steps 40 --lr $lr --seeds 0,1,2 --settings $S --eval-batches 16 --corpus-bytes 2000000 --threads 4 \
    > $R/lm-$lr.log 2>&1
  echo "rc=$? lr=$lr t=$(date -u +%T)" >> $L
  tail -12 $R/lm-$lr.log >> $L
done
cp results/lm-*.json $R/ 2>/dev/null
tar czf $OUT/logs.tgz -C $R .
