#!/usr/bin/env bash
# The prepared accelerator run (one call of the device tool, at most 590 s of step timeouts:
# 230 + 150 + 120 + 90, inside the tool's 600 s):
# the layer benchmark in float32 and bfloat16 up to batch 65536 and width 1024, compiled memory
# included, next to efficient-kan (PyTorch, on the same GPU) when its source is carried in
# .peers/src, then a short configs/toy.py run, then the wide training step of
# scripts/bench_scale.py on the one GPU (docs/SCALING.md). JSON lines and logs go to $OUT
# (./device_out when unset), to be recorded in docs/PERFORMANCE.md and docs/SCALING.md with the
# machine line of env.txt.
#
# The device image has jax, flax, optax, orbax, chex, absl, sympy, scipy and matplotlib but not
# ml_collections. Before the call, in the repository root here:
#
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: -d .whl ml_collections==1.1.0
#   echo /.peers/ >> .git/info/exclude   # efficient-kan has no registry package: its source,
#   mkdir -p .peers && git -C <efficient-kan snapshot> archive HEAD src | tar -x -C .peers
#
# then run `bash scripts/device_check.sh` there with carry=[".whl", ".peers"] and timeout_s=600.
# Sizes can be shrunk for a dry run on a CPU:
#   BIG_BATCH=512 BIG_WIDTH=32 GRID_BATCH=256 GRID_WIDTH=16 SCALE_WIDTHS=8,32,32,4 SCALE_BATCH=256 \
#     OUT=/tmp/dev bash scripts/device_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-device_out}
mkdir -p "$OUT"
BIG_BATCH=${BIG_BATCH:-65536}
BIG_WIDTH=${BIG_WIDTH:-1024}
GRID_BATCH=${GRID_BATCH:-1024,8192}
GRID_WIDTH=${GRID_WIDTH:-64,256}
SCALE_WIDTHS=${SCALE_WIDTHS:-256,1024,1024,10}
SCALE_BATCH=${SCALE_BATCH:-65536}
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
[ -d .peers/src ] && export PYTHONPATH=$PYTHONPATH:$PWD/.peers/src
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
  python3 -c "import jax; print('jax', jax.__version__, jax.devices())"; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

# 1. G = 5 at every size (the acceptance case is batch 1024, 64 -> 64), both dtypes, memory too;
#    the local-support path (it gathers batch * n * (k+1) * o elements) only in step 2.
timeout 230 python3 scripts/bench_layer.py --batch=1024,"$BIG_BATCH" --width=64,"$BIG_WIDTH" --grid=5 \
    --dtype=float32,bfloat16 --paths=auto,uniform,general --rounds=5 --memory --memory-case= --peers \
    > "$OUT/bench_layer_g5.jsonl" 2> "$OUT/bench_layer_g5.err"
echo "bench G=5: exit $?, $(grep -c '"kind": "time"' "$OUT/bench_layer_g5.jsonl") timings"
grep '"efficient-kan"' "$OUT/bench_layer_g5.jsonl" | head -3
# 2. G = 100 against G = 5 (the time(G=100) / time(G=5) criterion) and the local path's crossover,
#    at widths where the dense basis (batch * n * (G + k) values) stays a few GB.
timeout 150 python3 scripts/bench_layer.py --batch="$GRID_BATCH" --width="$GRID_WIDTH" --grid=5,20,100 \
    --dtype=float32 --paths=auto,general,local_general --rounds=5 --memory-case=8192,256,10,50 \
    > "$OUT/bench_layer_grid.jsonl" 2> "$OUT/bench_layer_grid.err"
echo "bench G: exit $?, $(grep -c '"kind": "time"' "$OUT/bench_layer_grid.jsonl") timings"
# 3. A short training run end to end (float64 L-BFGS as configured; wall time and stages in results.json).
rm -rf /tmp/kan_toy_device
timeout 120 python3 -m experiments.main --config=configs/toy.py --workdir=/tmp/kan_toy_device \
    --config.compilation_cache_dir= > "$OUT/toy.log" 2>&1
echo "toy: exit $?"
cp /tmp/kan_toy_device/results.json "$OUT/toy_results.json" 2>/dev/null
tail -1 "$OUT/toy.log"
# 4. The wide training step (Adam on the MSE of a [256, 1024, 1024, 10] KAN, G = 10, batch 65536;
#    docs/SCALING.md) on the one GPU, mesh data:1, float32 and bfloat16: steps/s, samples/s,
#    compile time and memory_analysis. About 30-60 s; lines written before a timeout are kept.
timeout 90 python3 scripts/bench_scale.py --widths="$SCALE_WIDTHS" --batch="$SCALE_BATCH" --grid=10 \
    --dtypes=float32,bfloat16 --meshes=data:1 --rounds=5 --min-time=0.2 \
    > "$OUT/bench_scale.jsonl" 2> "$OUT/bench_scale.err"
echo "bench scale: exit $?, $(grep -c '"kind": "step"' "$OUT/bench_scale.jsonl") steps"
grep '"kind": "step"' "$OUT/bench_scale.jsonl" | grep -o '"dtype": "[a-z0-9]*"\|"compile_s": [0-9.]*\|"samples_per_s": [0-9.]*' | paste -sd' ' -
