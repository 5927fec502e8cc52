#!/bin/bash
# Prepared in session 17, candidate swapped in session 18; not run (no device lent). Issue 13: every H200 demo before session 17 sent the policy
# a cost profile without a training step (no optimizer share: features no training episode has; BENCHMARKS,
# session 17). The demo now times one. Part 1 of 2: memory-first on gpt-85m, where the shipped s15x21 lost
# to the static r64/b4/g0 (J 0.230 vs 0.197), with the profile fixed, then the session-18 candidate s18c33
# (s17a31 fine-tuned on jobs without a profile: passes all 45 surrogate floor cells with a profile, the CPU
# demo's and the 15 real CPU training cells; plays r32/b8/g0 there in the surrogate, r0/b8/g0 in the other
# presets; the H200 memory-first floor cell decides whether it ships), and what moves the default's decisions. A CPU replay of session 16's windows with the share (BENCHMARKS, session
# 17) predicts s15x21 answers 8 of 30 with r0/b8/g0: its figure may fall. ~470 s on a fresh machine. Carry .whl13.
source results/gpu-h200-next/preamble.sh
export MANGO_CACHE_DIR=$R/cache  # one profile (gpt-85m's) is cached when obs-shift reads it
DEMO_TIMEOUT=330 demo_mf gpt85m r64/b4/g0
python3 -m mango_cli bench obs-shift $R/demo-mf-gpt85m/telemetry.jsonl --workload gpu-gpt85m-cosine \
  --hardware h200-gpt85m --objective memory-first --policy default \
  --profile "$(ls $R/cache/profiles/*.json | head -1)" > $R/obs_shift.md 2>&1
step obs_shift $?; tail -20 $R/obs_shift.md >> $L
DEMO_TIMEOUT=150 demo_mf gpt85m-s18c33 r64/b4/g0 --policy s18c33 --policy-dir results/policy-s18c33
finish
