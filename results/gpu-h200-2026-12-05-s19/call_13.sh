#!/bin/bash
# Prepared in session 17 (s18c33 swapped in and the profile timing added in session 18), not run. Part 2 of call 12: memory-first on lm-medium (default and s18c33) and
# balanced on gpt-85m (the default; a tie with r0/b8/g0 before the profile fix), and (session 18) the auto
# profile's wait on gpt-85m. ~470 s. Carry .whl13.
source results/gpu-h200-next/preamble.sh
# session 18: the wait a job with profile="auto" (the hook's default) pays on a cache miss, on the H200 (the
# settings of client.profile.job_profile; the training step timed too, as the demo does)
timeout 120 python3 -m mango_cli profile --model gpt-85m --steps 5 --warmup 2 --force > $R/profile-gpt85m.log 2>&1
step "profile gpt-85m (job_profile settings)" $?; grep -E "wall time|AdamW step" $R/profile-gpt85m.log >> $L
DEMO_TIMEOUT=200 demo_mf lmmed r64/b4/g0 --model lm-medium --steps 600 --batch-size 32
DEMO_TIMEOUT=100 demo_mf lmmed-s18c33 r64/b4/g0 --model lm-medium --steps 600 --batch-size 32 \
  --policy s18c33 --policy-dir results/policy-s18c33
DEMO_TIMEOUT=150 demo_obj bal-gpt85m balanced r0/b8/g0
finish
