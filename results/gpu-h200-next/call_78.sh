#!/bin/bash
# Session 36 (carry .whl13s and .old; CALL_LIMIT <= 560): session 35's call_76.sh (no machine in five tries; replaced) with
# issue 12's untried 2-3-bit register caps put second. .old/optimizer.py is afba452~1's (before the zero
# buffers: `git show afba452~1:client/compression/optimizer.py > .old/optimizer.py`).
# 1. the compiled tests (the zero buffers at a change; MangoAdamW.last_grad_norm on the fused path; the chunked
#    refresh);
# 2. issue 12's energy goal at 2 bits (1.06-1.13x AdamW): the register caps of the full-v 2-3-bit kernels and of
#    r0/b4/g1, never run on a GPU (statically the 2-bit kernel spills 104 B a thread at its cap 72, none at
#    128: `python -m benchmarks.sass --cases "r0/b2/g0 full-v" --max-regs 128`);
# 3. issue 12: `mango bench gpu --parts switch` with the old optimizer.py, then today's, one machine;
# 4. issue 12: the 1B step rows of the projected settings (their peak memory with the chunked refresh:
#    15.9 GiB at r64/b8/g0 in call 75, AdamW's);
# 5. issue 13: the demo on gpt-85m under balanced with the default policy s35a, one seed.
source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
gpu_tests
left=$(left_s)
[ $left -ge 90 ] && reg_caps $(( left < 150 ? left : 150 )) ",r0/b4/g1|,r0/b4/g1|MAX_REGS=168"
if [ $(left_s) -ge 70 ]; then
  cp client/compression/optimizer.py /tmp/optimizer.new.py
  cp .old/optimizer.py client/compression/optimizer.py && switch old
  cp /tmp/optimizer.new.py client/compression/optimizer.py && switch new
fi
if [ $(left_s) -ge 100 ]; then
  timeout 90 python3 -m mango_cli bench gpu --out $R/b1 --model 1b --parts step --energy-window-s 1.0 \
    --optimizers "torch AdamW (fused),r64/b8/g0,r16/b3/g0.75,r0/b3/g0,-torch-path,-unchecked,-full-v,-nearest,-factored,-g0.5,-no-EF,-nf4,-stochastic" \
    > $R/b1.log 2>&1
  step 1b $?; cat $R/b1/*.md >> $L 2>/dev/null || grep "AdamW" $R/b1.log | tail -10 >> $L
fi
left=$(left_s)
[ $left -ge 120 ] && DEMO_TIMEOUT=$left SEEDS=1 demo_obj balanced-gpt85m balanced r0/b4/g0
finish
