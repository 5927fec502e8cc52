#!/bin/bash
# Session 20, run inline on the warm H100 after call 11 (results/gpu-h200-next/call_16.sh with CAND=s20j51):
# the default s18c33 under memory-first on gpt-85m (this device's baseline), s20j51 under memory-first and
# balanced on lm-medium. Carry .whl13 (with the fastapi-offline wheel).
source results/gpu-h200-next/preamble.sh; M="--model lm-medium --steps 600 --batch-size 32"; DEMO_TIMEOUT=140 demo_mf gpt85m-s18c33 r64/b4/g0 --policy s18c33 --policy-dir results/policy-s18c33; DEMO_TIMEOUT=150 demo_mf lmmed-s20j51 r64/b4/g0 $M --policy s20j51 --policy-dir results/policy-s20j51; DEMO_TIMEOUT=140 demo_obj bal-lmmed-s20j51 balanced r64/b4/g0 $M --policy s20j51 --policy-dir results/policy-s20j51; finish; cat $L
