#!/bin/bash
# Issue 13, session 5: the H200 check of the learned policy trained on the final-loss reward and selected on the
# final-loss score. One device call from the repository root (`bash results/policy-gpu-check.sh`), <= 9 minutes:
# the demo (600 steps; each demo trains the adaptive run, plain AdamW and the static r0/b8/g0 on the same
# batches, and prints every run's objective J (envs.reward.objective_cost) and the verdict) under the presets
# balanced and loss-first, on the 85 M byte GPT (gpt-85m, the demo's default model on a GPU) and on lm-medium,
# first with the session-5 candidate policy (results/policy-candidate-s5/, served by name), then with the
# shipped default policy, in that order (the candidate's four demos first, in case the time runs out).
# Measured in session 4 (results/gpu-h200-2026-12-03/call3/run.log): a gpt-85m demo takes 47-72 s (the first
# one compiles), an lm-medium demo 30 s; eight demos ~ 330 s. Logs and summaries under $OUT.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/policy-gpu-check}; mkdir -p "$OUT"
L=$OUT/run.log; t0=$(date +%s); END=530
left() { echo $(( END - ($(date +%s)-t0) )); }
step() { local cap=$1; shift; local l=$(left); local t=$(( cap < l ? cap : l )); if [ $t -lt 20 ]; then echo "skip $*" >> $L; return; fi; timeout $t "$@"; echo "rc=$? t=$(( $(date +%s)-t0 )) :: $*" >> $L; }
date -u > $L; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader >> $L 2>&1
CAND=results/policy-candidate-s5
demo() {  # demo <tag> <cap s> <demo args...>
    local tag=$1 cap=$2; shift 2
    step "$cap" python3 -m mango_cli demo --out-dir /tmp/d-$tag --no-progress "$@" > $OUT/demo-$tag.log 2>&1
    { echo "=== $tag: $*"; cat /tmp/d-$tag/summary.md 2>/dev/null; echo; } >> $OUT/demo-summaries.md
}
LM=(--model lm-medium --batch-size 32 --seq-len 256)
if [ -d $CAND ]; then
    P=(--policy-dir $CAND --policy tinyformer-ppo-s5)
    demo cand-gpt-bal 120 --objective balanced "${P[@]}"
    demo cand-gpt-lf 90 --objective loss-first "${P[@]}"
    demo cand-lm-bal 60 --objective balanced "${LM[@]}" "${P[@]}"
    demo cand-lm-lf 60 --objective loss-first "${LM[@]}" "${P[@]}"
fi
demo ship-gpt-bal 90 --objective balanced
demo ship-gpt-lf 90 --objective loss-first
demo ship-lm-bal 60 --objective balanced "${LM[@]}"
demo ship-lm-lf 60 --objective loss-first "${LM[@]}"
grep -h "^verdict\|^=== " $OUT/demo-summaries.md > $OUT/verdicts.txt
ls -la $OUT >> $L
