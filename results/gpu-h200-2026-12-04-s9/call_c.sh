#!/bin/bash
# Session 9, GPU call C (issue 13). Carry .whl13 (as call B). What a setting costs in loss on the demo's GPU
# recipe (gpt-85m, batch 16 x 64, 600 steps, warm-up 40, cosine to 10 %) at the demo's lr (3e-3) and the
# recorded gpu-gpt85m workloads' (3e-4), three seeds, the same batches for every setting of a seed (session 8 on
# the CPU: at 3e-3 lm-small's AdamW was unstable and projection ended 7-14 % below it). The JSON is rewritten
# after every run, so a cut run keeps what finished. Afterwards, on the CPU:
#   mango bench sim2real <the lm JSONs> --per-setting --map gpt-85m=gpu-gpt85m-cosine
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl13/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p $R; L=$OUT/run.log; date -u > $L; t0=$(date +%s); END=${END:-480}
S=adamw,r0/b8,r64/b8/g0.25,r32/b4/g0.25
for lr in 3e-3 3e-4; do
  left=$(( END - ($(date +%s) - t0) )); [ $left -lt 60 ] && { echo "skip lr=$lr" >> $L; continue; }
  timeout $left python3 -m mango_cli bench lm --device cuda --model gpt-85m --steps 600 --batch-size 16 --seq-len 64 \
    --warmup-steps 40 --lr $lr --seeds 0,1,2 --settings $S --eval-batches 16 --corpus-bytes 2000000 --threads 4 \
    --bench-file $R/bench-lm-$lr.md --out-dir $R > $R/lm-$lr.log 2>&1
  echo "rc=$? lr=$lr t=$(( $(date +%s)-t0 ))" >> $L
  tail -12 $R/lm-$lr.log >> $L
done
tar czf $OUT/logs.tgz -C $R .
