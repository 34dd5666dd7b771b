#!/usr/bin/env bash
# Issue 13's GPU checks in one go: the `gpu`-marked tests, `python scripts/train.py
# attention=<each segmenter/conf/attention option> trainer=gpu trainer.max_epochs=2`, and the CUDA bf16 benchmark up to
# 262,144 units. At most ~9.5 minutes (the steps' own timeouts: 260 s, then 280 s for the
# tests and training runs together); most of it is torch.compile of FlexAttention.
# Results land in $OUT (or ./gpu_check_out):
#   summary.txt         exit status and wall time of each step, GPU and torch versions
#   bench_table.md, bench_results.json, bench.png   the CUDA benchmark (docs/benchmark.md, GPU section)
#   gpu_tests.log       pytest -m gpu -v output
#   train_<attention>.log   the training runs, one per segmenter/conf/attention/*.yaml
# Every step writes there as it goes, so a run cut short still returns what it finished.
#
# The device machine (torch 2.11, lightning, torchmetrics, tensorboard, pytest, rich,
# matplotlib) lacks hydra-core, omegaconf, antlr4-python3-runtime 4.9.3 and pysbd, and
# cannot download. Carry them as wheels (all pure Python; antlr4 4.9.3 is a source
# distribution only, so pip builds its wheel here):
#   here, once:        scripts/gpu_check.sh fetch          # -> .whl/ (git-ignored, ~0.5 MB)
#   on the machine:    scripts/gpu_check.sh                 # installs .whl/*.whl into /tmp/site first
# With the device tool: run(command="bash scripts/gpu_check.sh", carry=[".whl"], timeout_s=600).
# Steps run under their own timeouts and a failing step does not stop the next one.
set -u
cd "$(dirname "$0")/.."
WHEELS=.whl

if [ "${1:-}" = "fetch" ]; then
    PY=${PYTHON:-.venv/bin/python}
    mkdir -p "$WHEELS"
    exec "$PY" -m pip wheel -q --no-deps -w "$WHEELS" \
        hydra-core==1.3.8 omegaconf==2.3.1 antlr4-python3-runtime==4.9.3 pysbd==0.3.4
fi

OUT=${OUT:-$PWD/gpu_check_out}
WORK=$(mktemp -d /tmp/gpu_check.XXXX)
mkdir -p "$OUT"
SUMMARY=$OUT/summary.txt
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore SEGMENTER_ROOT=$PWD
: >"$SUMMARY"

step() {  # step NAME TIMEOUT_S COMMAND...: run, time and record the exit status
    local name=$1 limit=$2 start rc
    shift 2
    start=$(date +%s)
    timeout "$limit" "$@"
    rc=$?
    echo "$name: exit $rc in $(($(date +%s) - start)) s (limit $limit s)" | tee -a "$SUMMARY"
    return $rc
}

if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site "$WHEELS"/*.whl || echo "wheel install failed" | tee -a "$SUMMARY"
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
python3 - <<'PY' 2>&1 | tee -a "$SUMMARY"
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "device",
      torch.cuda.get_device_name() if torch.cuda.is_available() else "none")
import hydra, omegaconf, pysbd, lightning
print("hydra", hydra.__version__, "omegaconf", omegaconf.__version__, "lightning", lightning.__version__)
PY

# 1. The CUDA benchmark first, alone on the GPU (bf16 autocast, as trainer=gpu trains),
#    with the segment form as an extra row. local-attention (the `bench` extra) is not on
#    the machine. Its warm-up runs include FlexAttention's compilation.
step "benchmark cuda bf16" 260 python3 scripts/benchmark.py device=cuda dtype=bf16 \
    "lengths=[1024,4096,16384,65536,262144]" repeats=3 matmul_size=8192 memory_budget_gb=100 \
    "~rows.local_attention" "+attention@rows.boundary_segment=boundary_aware" rows.boundary_segment.bias=segment \
    hydra.run.dir=$WORK/bench >"$WORK/bench.log" 2>&1
cp "$WORK/bench/table.md" "$OUT/bench_table.md" 2>/dev/null || tail -30 "$WORK/bench.log" >"$OUT/bench_table.md"
cp "$WORK/bench/results.json" "$OUT/bench_results.json" 2>/dev/null
cp "$WORK/bench/benchmark.png" "$OUT/bench.png" 2>/dev/null

# 2. One training run per attention type (segmenter/conf/attention/*.yaml) in the background (the GPU
#    has room for all of them and nothing is timed now), each with its own output and cache
#    folder, while
# 3. the gpu-marked tests run.
for a in $(cd segmenter/conf/attention && ls *.yaml | sed 's/\.yaml$//'); do
    (step "train $a" 280 python3 scripts/train.py attention=$a trainer=gpu trainer.max_epochs=2 \
        callbacks.rich_progress_bar=null paths.log_dir=$WORK/train_$a hydra.run.dir=$WORK/train_$a/run \
        >"$OUT/train_$a.log" 2>&1) &
done
step "gpu tests" 280 python3 -m pytest -m gpu -v -rs -p no:cacheprovider tests/test_gpu.py >"$OUT/gpu_tests.log" 2>&1
tail -3 "$OUT/gpu_tests.log" >>"$SUMMARY"
wait
grep -h -E "test/f1|Error" "$OUT"/train_*.log | tail -12 >>"$SUMMARY"
cat "$SUMMARY"
