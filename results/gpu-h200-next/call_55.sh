#!/bin/bash
# Prepared in session 29 (after call_49.sh; ask for an H200): r0/b8/g0 without the error buffer. With it the
# default 8-bit state is 3.05 B/param, without it 2.04 (bitsandbytes' and torchao's 8-bit figure), and the step
# drops a buffer's read and write (session 28's variants: about 5 % of the step). (1) The step rows of both,
# (2) their paired convergence against AdamW over three seeds (`--parts converge --seeds 3 --steps 600`, the
# table rewritten after every run). If no-EF trains as well, an "auto" error buffer (off at rank 0 / 8 bits)
# is the product question. Carry .whl13s. ~500 s.
source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
timeout 100 python3 -m mango_cli bench gpu --out $R/step --parts step --optimizers "AdamW (fused),r0/b8/g0,-torch-path,-g0.5,-unchecked,-stochastic" --energy-window-s 2.0 > $R/step.log 2>&1
step step $?; cat $R/step/*.md >> $L 2>/dev/null
converge $(left_s) 3 "AdamW (fused),r0/b8/g0,-torch-path,-g0.5,-unchecked,-stochastic"
finish
