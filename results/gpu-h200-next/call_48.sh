#!/bin/bash
# Prepared in session 28 for the next session's first call; ask for an H200 (issue 12's goals are the H200's).
# Issue 12: (1) the step rows with the per-tile skip default (session 28 timed it on an H100 only; call 44's
# H200 rows are the per-tensor default) and the fewer-instruction rank-0 points: r0/b8/g0 rounded to nearest
# (an H100 found it as fast at 0.95x AdamW's energy; on the H200, where the step is issue-bound, fewer
# instructions should buy time too; it is what stochastic_rounding="auto" does at 8 bits) and r0/b4/g0 with a
# full v; (2) the variants rows of the skip rule and of the cheaper draws (philox8, hash8, hash: slower on
# the H100 in session 24, never timed on the H200 since);
# (3) the rank-0 tile and warp sweep with the pre-pass gone (`--parts tune`); (4) the paired convergence of
# nearest against stochastic 8-bit rounding over seeds (`--parts converge --seeds 2 --steps 600`). ~500 s.
# Carry .whl13s. The pytest -m gpu suite is call_49.sh's.
source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
timeout 120 python3 -m mango_cli bench gpu --out $R/step --parts step --optimizers "AdamW (fused),r0/b8/g0,r0/b4/g0,-torch-path,-g0.5" --energy-window-s 2.0 > $R/step.log 2>&1
step step $?; cat $R/step/*.md >> $L 2>/dev/null
timeout 90 python3 - > $R/var.log 2>&1 <<PY
import sys
from benchmarks import gpu
keep = {("r0/b8/g0", "{}"), ("r0/b8/g0", "{'skip_nonfinite': False}"), ("r0/b8/g0", "{'stochastic_rounding': False}")}
draws = {("r0/b8/g0", "{}", "{'DRAWS': 'philox8'}"), ("r0/b8/g0", "{}", "{'DRAWS': 'hash8'}"), ("r0/b8/g0", "{}", "{'DRAWS': 'hash'}")}
gpu.VARIANTS[:] = [v for v in gpu.VARIANTS if "SKIP_GRAIN" in v[2] or (not v[2] and (v[0], str(v[1])) in keep)
                   or (v[0], str(v[1]), str(v[2])) in draws]
print(len(gpu.VARIANTS), "variants", flush=True)
sys.argv = ["mango", "bench", "gpu", "--out", "$R/var", "--parts", "variants"]
from mango_cli import run
run()
PY
step variants $?; cat $R/var/*.md >> $L 2>/dev/null
timeout 150 python3 -m mango_cli bench gpu --out $R/tune --parts tune > $R/tune.log 2>&1
step tune $?; cat $R/tune/*.md >> $L 2>/dev/null
left=$(( ${CALL_LIMIT:-540} - ($(date +%s)-t0) - 10 )); echo "left $left" >> $L
timeout $left python3 -m mango_cli bench gpu --out $R/conv --parts converge --seeds 2 --steps 600 \
  --optimizers "AdamW (fused),r0/b8/g0,-torch-path,-g0.5,-unchecked" > $R/conv.log 2>&1
step converge $?; cat $R/conv/*.md >> $L 2>/dev/null
finish
