#!/usr/bin/env bash
# The GPU checks of the speed issue (and the GPU determinism check) as one prepared command: a lent GPU's time is
# short (minutes per session, start included), so it runs once, each step time-boxed, each step's output kept even
# when a later one fails.
#
#   bash benchmarks/device_check.sh              on the GPU machine; results into $OUT (default: ./device_out)
#   DRY_RUN=1 bash benchmarks/device_check.sh    on a CPU first, at tiny sizes: every step runs and writes its file
#   STEPS="1 2 3" bash benchmarks/device_check.sh, then STEPS=4 ...   the same in two calls (default: STEPS="1 2 3 4")
#
# Time boxes (seconds, each step's processes killed at its box; the GPU sizes): speed 3 x 90, determinism 2 x 75,
# the full run 120, scaling SCALE_BOX (default 300). Steps 1-3 take at most 540 s: where one command may run
# 10 minutes, run them first (the speed rows matter most), then step 4 with SCALE_BOX set to the time that is left.
#
# Needs: the project's Python packages (a GPU image without scanpy/anndata takes them as wheels on PYTHONPATH) and
# pbmc10x in $SCRCL_DATA_DIR (scrna/scDCC/10X_PBMC_top2000.h5). Steps, and what each writes into $OUT:
#   1. speed.md      benchmarks/speed.py on pbmc10x: d = 1500 float32 and bf16-mixed, d = 16 (s per epoch, split)
#   2. determinism   pbmc10x, --select final, --eval-every 1 vs once at the end: the same last-epoch scores?
#   3. full_run.txt  the default pbmc10x run (500 epochs) through train.py: wall time from launch to the end
#   4. scaling.md    benchmarks/scaling.py --device cuda at $SIZES resampled cells, recompute + bf16-mixed, scanpy's
#                    approximate cell graph (exact kNN of a million cells would not fit the time box)
# Copy the rows of speed.md into benchmarks/results/speed.md and scaling.md into benchmarks/results/, naming the machine.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python3}
STEPS=" ${STEPS:-1 2 3 4} "
for s in $STEPS; do case "$s" in 1|2|3|4) ;; *) echo "STEPS takes step numbers 1-4 separated by spaces (e.g. STEPS=\"1 2 3\"), got '$s'" >&2; exit 2 ;; esac; done
OUT=${OUT:-$ROOT/device_out}
mkdir -p "$OUT"
export WANDB_MODE=disabled MPLBACKEND=Agg PYTHONUNBUFFERED=1
if [ "${DRY_RUN:-0}" = 1 ]; then
  DEVICE=cpu ACCEL=cpu WIDE=16 EPOCHS=3 FULL_EPOCHS=3 SIZES=${SIZES:-2000,4000} THREADS=2
else
  DEVICE=cuda ACCEL=gpu WIDE=1500 EPOCHS=100 FULL_EPOCHS=500 SIZES=${SIZES:-131072,1048576} THREADS=16
fi
SCALE_BOX=${SCALE_BOX:-300}
step() { case "$STEPS" in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
log() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$OUT/steps.log"; }

if step 1; then
log "1. speed ($DEVICE)"
for setting in "--hidden-dim $WIDE --precision 32-true" "--hidden-dim $WIDE --precision bf16-mixed" "--hidden-dim 16 --precision 32-true"; do
  timeout 90 $PY benchmarks/speed.py --dataset pbmc10x --device "$DEVICE" --epochs 10 --warmup 3 $setting \
    --output "$OUT/speed.md" >> "$OUT/steps.log" 2>&1 || log "speed $setting failed (exit $?)"
done
fi

if step 2; then
log "2. determinism: --eval-every 1 vs once, --select final, $EPOCHS epochs"
for every in 1 "$EPOCHS"; do
  timeout 75 $PY train.py --dataset pbmc10x --accelerator "$ACCEL" --epochs "$EPOCHS" --eval-every "$every" --select final \
    --seed 5 --no-umap --logger csv --no-progress --output "$OUT/runs" --run-name "every$every" >> "$OUT/steps.log" 2>&1 \
    || log "determinism run every $every failed (exit $?)"
done
$PY - "$OUT/runs/every1/metrics.json" "$OUT/runs/every$EPOCHS/metrics.json" <<'EOF' | tee -a "$OUT/steps.log" > "$OUT/determinism.txt"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
same = all(a[k] == b[k] for k in ("acc", "nmi", "ari", "f1"))
print(f"eval every epoch: ARI {a['ari']:.6f} NMI {a['nmi']:.6f}; once at the end: ARI {b['ari']:.6f} NMI {b['nmi']:.6f}; "
      f"identical: {same}")
EOF
fi

if step 3; then
log "3. the default pbmc10x run, $FULL_EPOCHS epochs, launch to end"
start=$($PY -c 'import time; print(time.time())')
timeout 120 $PY train.py --dataset pbmc10x --accelerator "$ACCEL" --epochs "$FULL_EPOCHS" --no-umap --no-progress \
  --logger csv --output "$OUT/runs" --run-name full >> "$OUT/steps.log" 2>&1 || log "full run failed (exit $?)"
wall=$($PY -c "import time; print(f'{time.time() - $start:.1f}')")
echo "pbmc10x, $FULL_EPOCHS epochs, $DEVICE: wall $wall s from launch to exit; $(tail -1 "$OUT/steps.log")" \
  | tee -a "$OUT/steps.log" > "$OUT/full_run.txt"
fi

if step 4; then
log "4. scaling at $SIZES cells ($DEVICE, recompute, bf16-mixed)"
timeout "$SCALE_BOX" $PY benchmarks/scaling.py --device "$DEVICE" --sizes "$SIZES" --impls linear --no-dense-max --trainer-epochs 0 \
  --epochs 2 --warmup 1 --threads "$THREADS" --memory-limit-gb 110 --set recompute=true --set precision=bf16-mixed \
  --set cell_neighbours=scanpy --note "benchmarks/device_check.sh, step 4" --output "$OUT/scaling.md" >> "$OUT/steps.log" 2>&1 \
  || log "scaling failed (exit $?)"
fi
rm -rf "$OUT/runs"/*/checkpoints
log "done"
