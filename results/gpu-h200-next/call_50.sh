#!/bin/bash
# Prepared in session 28 for issue 13 (a later call than 48-49). The surrogate charges r0/b4/g0 a 1.4 % worse
# final loss than r0/b8/g0 on the GPU job (BENCHMARKS, session 28), where 11 GPU seeds measured none; its GPU
# traces hold one episode that stays at rank 0 / 4 bits after the warm-up, recorded with session 10's core.
# This records rank-0 episodes at 4 and 8 bits (and one projected static to keep the projected features'
# data current) with today's core over four seeds, for the refit (`python -m envs.fit`, on the CPU after
# copying the file to envs/traces/) and a retrain. CALL_LIMIT s (default 540); `mango record` starts no
# episode that would end past its wall budget. Carry .whl13s.
source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
wall=$(python3 -c "print(round((${CALL_LIMIT:-540} - 40) / 60, 2))")
timeout $(( ${CALL_LIMIT:-540} - 20 )) python3 -m mango_cli record --workloads gpu-gpt85m-cosine,gpu-gpt85m-val-linear \
  --seeds 6,7,8,9 --device cuda --clock wall --threads 8 --max-wall-min $wall --seed 28 --no-progress \
  --controllers r0/b4/g0,r0/b8/g0,r0/b4/g0,r64/b4/g0 --out $OUT/gpu-h200-s28.jsonl.gz > $R/record.log 2>&1
step record $?; tail -5 $R/record.log >> $L
finish
