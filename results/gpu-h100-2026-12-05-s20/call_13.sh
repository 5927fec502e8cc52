#!/bin/bash
# Session 20, inline after call 12 on the same H100: the default s18c33 under balanced on gpt-85m, beside
# s20j51's 0.791 of call 11. Carry .whl13.
source results/gpu-h200-next/preamble.sh; DEMO_TIMEOUT=170 demo_obj bal-gpt85m-s18c33 balanced r64/b4/g0 --policy s18c33 --policy-dir results/policy-s18c33; finish; cat $L
