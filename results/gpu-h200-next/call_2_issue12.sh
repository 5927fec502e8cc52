#!/bin/bash
# Prepared in session 10 (not run). Issue 12 after session 10 (no core change since session 9's final
# code, measured in session 10's calls 4-5): the 1B-parameter rows, never run since session 6, and the r0/b4
# kernel's instruction count (ncu), the goals still missed. Carry .whl (../shared/tools/gpu-wheels.sh torchao
# apollo-torch flashoptim fastapi-offline tyro uvloop httptools, plus pytest-xdist and execnet).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p $R; L=$OUT/run.log; date -u > $L; t0=$(date +%s)
timeout 240 python3 -m mango_cli bench gpu --out $R/g1b --parts step --model 1b --energy-window-s 0.3 \
  --optimizers "torch AdamW,MangoAdamW r0/b8/g0,MangoAdamW r0/b4/g0,MangoAdamW r4/b8/g0,MangoAdamW r64/b8/g0" > $R/step1b.log 2>&1
echo "rc=$? 1b t=$(( $(date +%s)-t0 ))" >> $L; cat $R/g1b/*.md >> $L 2>/dev/null
tar czf $OUT/logs.tgz -C $R .
