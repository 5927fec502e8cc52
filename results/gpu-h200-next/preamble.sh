# Sourced by the call scripts of this folder (run from the repository root on the device machine, .whl13s or
# .whl13 carried; make .whl13 with `../shared/tools/gpu-wheels.sh fastapi-offline && mv .whl .whl13`, and
# .whl13s as its copy without bitsandbytes: since session 26 the tree and .whl13 together pass the 64 MiB carry
# limit, so carry .whl13s unless the call needs the bench's bitsandbytes rows; WHL=DIR overrides): installs the
# wheels, sets R (logs), L (the summary log) and t0, and defines the helpers.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site ${WHL:-$([ -d .whl13s ] && echo .whl13s || echo .whl13)}/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p $R; L=$OUT/run.log; date -u > $L; t0=$(date +%s)

# step NAME RC: one line of the summary log with the seconds since the start
step() { echo "rc=$2 $1 t=$(( $(date +%s)-t0 ))" >> $L; }

# gpu_tests: `pytest -m gpu` (the service's fuzz and hardening files left out: CPU-only and slow) and the fused
# tests compiled, their tallies to the summary log (~60-110 s)
gpu_tests() {
  timeout 120 python3 -m pytest -q -n 8 -p no:cacheprovider -m gpu tests --ignore=tests/policy_service/test_fuzz.py \
    --ignore=tests/policy_service/test_hardening.py > $R/gpu-tests.log 2>&1
  step gpu-tests $?; grep -E "FAILED|ERROR|passed|failed" $R/gpu-tests.log | tail -8 >> $L
  timeout 90 python3 -m pytest -q -n 8 -p no:cacheprovider tests/client/test_fused.py > $R/fused-tests.log 2>&1
  step fused-tests $?; grep -E "FAILED|ERROR|passed|failed" $R/fused-tests.log | tail -8 >> $L
}

# demo_obj NAME OBJECTIVE STATIC [ARGS...]: the demo under OBJECTIVE, $SEEDS seeds (default 2), static run STATIC (~100-195 s;
# the first of a fresh machine compiles too: DEMO_TIMEOUT, default 330 s); verdict and tables to the summary log
demo_obj() {
  local name=$1 obj=$2 static=$3; shift 3
  timeout ${DEMO_TIMEOUT:-330} python3 -m mango_cli demo --seeds ${SEEDS:-2} --objective $obj --static-setting "$static" --no-progress \
    --out-dir $R/demo-$name "$@" > $R/demo-$name.log 2>&1
  step "demo $obj $name (static $static)" $?
  grep -E "verdict|^\| (adaptive|adamw|static|[0-9]|mean)" $R/demo-$name.log >> $L
}

# demo_mf NAME STATIC [ARGS...]: demo_obj under memory-first (logs demo-mf-NAME)
demo_mf() { local name=$1; shift; demo_obj mf-$name memory-first "$@"; }

# finish: drop the plots, pack the logs
finish() { rm -f $R/demo-*/*.png; tar czf $OUT/logs.tgz -C $R .; }

# left_s: the seconds left of CALL_LIMIT (default 540), 10 s kept back; logged, and printed for a timeout
left_s() { local left=$(( ${CALL_LIMIT:-540} - ($(date +%s)-t0) - 10 )); echo "left $left" >> $L; echo $left; }

# converge SECONDS SEEDS OPTIMIZERS: `mango bench gpu --parts converge --seeds SEEDS --steps 600` on OPTIMIZERS
# (the table rewritten after every run, so a cut-off part keeps its rows), its table to the summary log
converge() {
  timeout $1 python3 -m mango_cli bench gpu --out $R/conv --parts converge --seeds $2 --steps 600 \
    --optimizers "$3" > $R/conv.log 2>&1
  step converge $?; cat $R/conv/*.md >> $L 2>/dev/null
}

# grid_step DROP: the step rows of the whole bench grid beside fused AdamW, in what is left of CALL_LIMIT,
# the peers and the rows named in DROP (comma-separated, each with its leading "-") left out
grid_step() {
  timeout $(left_s) python3 -m mango_cli bench gpu --out $R/grid --parts step --energy-window-s 1.0 \
    --optimizers=-bnb,-torchao,-Flash,-GaLore,-APOLLO,$1 > $R/grid.log 2>&1
  step grid $?; cat $R/grid/*.md >> $L 2>/dev/null || grep "AdamW" $R/grid.log | tail -25 >> $L
}

# switch NAME: `mango bench gpu --parts switch` (a setting change's cost, ~12 s), its table to the summary log
switch() {
  timeout 90 python3 -m mango_cli bench gpu --out $R/switch-$1 --parts switch > $R/switch-$1.log 2>&1
  step "switch $1" $?; cat $R/switch-$1/*.md >> $L 2>/dev/null || tail -5 $R/switch-$1.log >> $L
}

# reg_caps SECONDS [ROWS]: `mango bench gpu --parts variants` (1 s energy windows) on the register caps of the
# full-v 2-3-bit kernels (issue 12's energy at 2 bits; statically the 2-bit kernel spills 104 B a thread at
# its cap 72: `python -m benchmarks.sass --cases "r0/b2/g0 full-v" --max-regs N`), plus ROWS (more
# 'SETTING|VARIANT' rows, comma-first), within SECONDS; its table to the summary log
reg_caps() {
  timeout $1 python3 -m mango_cli bench gpu --out $R/var --parts variants --energy-window-s 1.0 \
    --optimizers "r0/b2/g0|,r0/b2/g0|MAX_REGS=96,r0/b2/g0|MAX_REGS=128,r0/b2/g0|MAX_REGS=0,r0/b3/g0|,r0/b3/g0|MAX_REGS=96$2" \
    > $R/var.log 2>&1
  step variants $?; cat $R/var/*.md >> $L 2>/dev/null || tail -5 $R/var.log >> $L
}

# var NAME ROWS: `mango bench gpu --parts variants` on ROWS ('SETTING|VARIANT' strings, comma-separated),
# within CALL_LIMIT (150 s at most), its table to the summary log
var() {
  local left=$(left_s); [ $left -ge 30 ] || return
  timeout $(( left < 150 ? left : 150 )) python3 -m mango_cli bench gpu --out $R/var-$1 --parts variants --energy-window-s 1.0 \
    --optimizers "$2" > $R/var-$1.log 2>&1
  step "variants $1" $?; cat $R/var-$1/*.md >> $L 2>/dev/null || tail -5 $R/var-$1.log >> $L
}

# The rank-0 tile rows of the variants part (session 39): TILE_ROWS at 8 and 4 bits, TILE_MORE the other
# widths; 512 and 1024 values a program, capped as now and uncapped (T5, T10)
T5="MATRIX_TILE=512, MAX_REGS=0"; T10="MATRIX_TILE=1024, MAX_REGS=0"
TILE_ROWS="r0/b8/g0|,r0/b8/g0|MATRIX_TILE=512,r0/b8/g0|$T5,r0/b8/g0|$T10,r0/b8/g0|error_feedback=False,r0/b8/g0|error_feedback=False, $T5"
TILE_ROWS="$TILE_ROWS,r0/b4/g0|,r0/b4/g0|MATRIX_TILE=512,r0/b4/g0|$T5,r0/b4/g0|$T10,r0/b4/g0|error_feedback=False"
TILE_ROWS="$TILE_ROWS,r0/b4/g0|error_feedback=False, $T5,r0/b4/g0|error_feedback=False, $T10"
TILE_MORE="r0/b3/g0|,r0/b3/g0|$T5,r0/b2/g0|,r0/b2/g0|$T5,r0/b16/g0|,r0/b16/g0|$T5,r0/b32/g0|,r0/b32/g0|$T5"

# with_fewer_kernel CMD...: run CMD with session 39's fewer-instructions rank-0 kernel in place
# (s39/rank0_fewer_instructions.patch, applied by `git apply` or `patch -p1`), then this tree's kernel back
with_fewer_kernel() {
  local k=client/compression/kernels/triton_step.py p=results/gpu-h200-next/s39/rank0_fewer_instructions.patch
  cp $k /tmp/triton_step_head.py
  if git apply $p 2>/dev/null || patch -s -p1 < $p; then "$@"; else echo "fewer kernel: the patch did not apply" >> $L; fi
  cp /tmp/triton_step_head.py $k
}

# grid2: the shipped grid (the step rows but the peers and the options' rows) with 2 s paired energy windows,
# 200 s at most (sessions 42-43's grid), its table to the summary log
grid2() {
  timeout 200 python3 -m mango_cli bench gpu --out $R/grid --parts step --energy-window-s 2.0 \
    --optimizers=-bnb,-torchao,-Flash,-GaLore,-APOLLO,-torch-path,-unchecked,-stochastic,-factored,-nf4,-nearest,-full-v > $R/grid.log 2>&1
  step grid $?; cat $R/grid/*.md >> $L 2>/dev/null || grep "AdamW" $R/grid.log | tail -25 >> $L
}

# b1_rows SETTINGS: the 1B model's step rows of fused AdamW and MangoAdamW at SETTINGS (space-separated), by
# exact names, in what is left of CALL_LIMIT, its table (or the printed rows) to the summary log
b1_rows() {
  local b="=torch AdamW (fused)" s
  for s in $1; do b="$b,=MangoAdamW $s"; done
  timeout $(left_s) python3 -m mango_cli bench gpu --out $R/b1 --model 1b --parts step --energy-window-s 1.0 \
    --optimizers "$b" > $R/b1.log 2>&1
  step b1 $?; cat $R/b1/*.md >> $L 2>/dev/null || grep -E "^\{" $R/b1.log | tail -12 >> $L
}
