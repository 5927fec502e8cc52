#!/bin/bash
# Session 14, the last call (~500 s of device time left). Carry .whl13. CANDS names retrains exported to
# results/policy-NAME/ (NAME.json, NAME.safetensors), tried in order on gpt-85m under memory-first.
# (a) The default (s13h14, chosen on the gpt-85m memory-first demo) on lm-medium, a GPU job its choice never
#     saw, memory-first against the floor r0/b8/g0 (session 12's flags: --steps 600 --batch-size 32).
# (b) Each candidate (matched hardware profiles, session 14) on gpt-85m, memory-first against the floor.
# (c) If time is left: lm-medium's static r64/b4/g0 (the gpt-85m best static) beside the default.
source results/gpu-h200-next/preamble.sh
demo_mf lmm-default r0/b8/g0 --model lm-medium --steps 600 --batch-size 32
for c in $CANDS; do demo_mf $c r0/b8/g0 --policy $c --policy-dir results/policy-$c; done
demo_mf lmm-r64-b4-g0 r64/b4/g0 --model lm-medium --steps 600 --batch-size 32
finish
