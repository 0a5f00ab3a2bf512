#!/usr/bin/env bash
# What this framework does on one GPU, in one command: `bash benchmarks/gpu_check.sh` prints a table of
# training samples/s at fp32, bf16 and fp16 (trainer.precision=32|bf16|16) for the text, speech, image and
# BART (summarization) demo recipes with the peak GPU memory of each run, and whether a resumed run is
# bitwise identical to an uninterrupted one on CUDA (text recipe, each precision).
#
# It sets up nothing beyond `make setup` (run if .venv is missing). Short trainings through the entry point
# (GPU_CHECK_STEPS optimizer steps, default 60) write run dirs under outputs/gpu_check/<time>/; samples/s is
# the median of the `train/samples_per_s` rows of each run's metrics.csv (logger=csv) after the first (the
# warm-up), peak memory torch.cuda.max_memory_allocated() of the training process (the trainer does not log it).
#
#   bash benchmarks/gpu_check.sh            needs a CUDA device: without one it stops at once (exit 1)
#   bash benchmarks/gpu_check.sh --dry-run  prints the commands it would run (no GPU, no .venv needed)
set -euo pipefail
cd "$(dirname "$0")/.."

DRY=0
case "${1:-}" in
  --dry-run) DRY=1 ;;
  "") ;;
  *) echo "usage: bash benchmarks/gpu_check.sh [--dry-run]" >&2; exit 2 ;;
esac

PY=.venv/bin/python
STEPS=${GPU_CHECK_STEPS:-60}
HALF=20  # the resume check: 2*HALF steps straight against HALF steps + trainer.resume=auto
OUT=outputs/gpu_check/$(date +%Y%m%d-%H%M%S)
RECIPES=(text:emotion_text speech:emotion_audio image:emotion_image bart:summarization)
PRECISIONS=(32 bf16 16)
# short runs: one validation batch at the end, no test, no per-epoch validation; scalars into metrics.csv
COMMON=(trainer.accelerator=cuda trainer.progress_bar=false trainer.log_every_n_steps=10 logger=csv
        trainer.val_every_n_epochs=null trainer.limit_val_batches=1 trainer.test_after_fit=false trainer.save_top_k=0)
# the resume check: deterministic kernels, a schedule that does not depend on max_steps, the same validations
RESUME=(experiment=emotion_text "${COMMON[@]}" trainer.deterministic=true scheduler=constant
        trainer.val_every_n_steps=$HALF trainer.validate_raw=always trainer.limit_train_batches=30)

# Runs `python -m emotionsumm.train` in-process and, at exit, writes the peak GPU memory to $GPU_CHECK_PEAK.
PEAK='
import atexit, os, torch
def _peak():
    if torch.cuda.is_available():
        with open(os.environ["GPU_CHECK_PEAK"], "w") as f:
            f.write(str(torch.cuda.max_memory_allocated()))
atexit.register(_peak)
from emotionsumm.train import main
main()
'

if [ "$DRY" = 0 ]; then
  cuda_in_venv() { "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; }
  # before any setup: nvidia-smi lists a GPU, or an existing .venv's torch sees one (e.g. no nvidia-smi in a container)
  if ! nvidia-smi -L 2>/dev/null | grep -q GPU && ! { [ -x "$PY" ] && cuda_in_venv; }; then
    echo "gpu_check: no CUDA device (nvidia-smi lists no GPU; torch in .venv, if there is one, sees none):" \
         "this script measures a GPU. 'bash benchmarks/gpu_check.sh --dry-run' prints what it would run." >&2
    exit 1
  fi
  [ -x "$PY" ] || make setup
  if ! cuda_in_venv; then
    echo "gpu_check: nvidia-smi lists a GPU but torch does not see it (torch.version.cuda =" \
         "$("$PY" -c 'import torch; print(torch.version.cuda)')): a CPU-only torch build in .venv? a driver too old?" >&2
    exit 1
  fi
  mkdir -p "$OUT"
fi

# train NAME OVERRIDES...: one training run into $OUT/NAME (log appended to $OUT/NAME.log; a failure is recorded
# in $OUT/NAME.failed and the table says so, the other runs go on)
train() {
  local name=$1; shift
  if [ "$DRY" = 1 ]; then
    printf '%q ' "$PY" -m emotionsumm.train "$@" "hydra.run.dir=$OUT/$name"; echo
    return
  fi
  echo "gpu_check: $name ..." >&2
  if ! GPU_CHECK_PEAK="$OUT/$name.peak" "$PY" -c "$PEAK" "$@" "hydra.run.dir=$OUT/$name" >>"$OUT/$name.log" 2>&1; then
    echo "gpu_check: $name failed, see $OUT/$name.log" >&2
    touch "$OUT/$name.failed"
  fi
}

[ "$DRY" = 1 ] && echo "# gpu_check --dry-run: the training runs (each wrapped to record torch.cuda.max_memory_allocated)"
for recipe in "${RECIPES[@]}"; do
  for precision in "${PRECISIONS[@]}"; do
    train "${recipe%%:*}-$precision" "experiment=${recipe#*:}" "${COMMON[@]}" "trainer.precision=$precision" \
      "trainer.max_steps=$STEPS"
  done
done
for precision in "${PRECISIONS[@]}"; do
  train "resume-$precision-full" "${RESUME[@]}" "trainer.precision=$precision" "trainer.max_steps=$((2 * HALF))"
  train "resume-$precision-half" "${RESUME[@]}" "trainer.precision=$precision" "trainer.max_steps=$HALF"
  # the same run dir again: it resumes from the half run's last.ckpt
  train "resume-$precision-half" "${RESUME[@]}" "trainer.precision=$precision" "trainer.max_steps=$((2 * HALF))" \
    trainer.resume=auto
done
[ "$DRY" = 1 ] && exit 0

"$PY" - "$OUT" "${RECIPES[@]}" <<'EOF'
"""The table: samples/s and peak memory per recipe and precision, then the resume check."""
import csv
import statistics
import sys
from pathlib import Path

import torch

out, recipes = Path(sys.argv[1]), [r.split(":")[0] for r in sys.argv[2:]]
precisions = {"32": "fp32", "bf16": "bf16", "16": "fp16"}


def cell(name: str) -> tuple[str, str]:
    """(samples/s, peak MiB) of one run, or why there is none."""
    if (out / f"{name}.failed").exists():
        return "failed", "-"
    with open(out / name / "metrics.csv", newline="") as f:
        rates = [float(r["value"]) for r in csv.DictReader(f) if r["name"] == "train/samples_per_s"]
    rate = f"{statistics.median(rates[1:] or rates):.0f}" if rates else "n/a"
    peak = out / f"{name}.peak"
    return rate, f"{int(peak.read_text()) / 2**20:.0f}" if peak.is_file() else "n/a"


def bitwise(precision: str) -> str:
    """yes if every tensor of last.ckpt's policy, EMA and optimizer state equals the uninterrupted run's."""
    names = [f"resume-{precision}-full", f"resume-{precision}-half"]
    if any((out / f"{n}.failed").exists() for n in names):
        return "failed"
    a, b = (torch.load(out / n / "checkpoints/last.ckpt", map_location="cpu", weights_only=True) for n in names)

    def flat(v, p=""):
        if isinstance(v, torch.Tensor):
            return {p: v}
        items = v.items() if isinstance(v, dict) else enumerate(v) if isinstance(v, (list, tuple)) else ()
        return {k: t for key, x in items for k, t in flat(x, f"{p}.{key}").items()}

    same = a["step"] == b["step"]
    for part in ("policy", "ema", "optimizer"):
        ta, tb = flat(a[part], part), flat(b[part], part)
        same = same and ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    return "yes" if same else "no"


print(f"\n{torch.cuda.get_device_name(0)}, torch {torch.__version__} (CUDA {torch.version.cuda}); run dirs: {out}\n")
header = ["recipe"] + [f"{p} samples/s" for p in precisions.values()] + [f"{p} peak MiB" for p in precisions.values()]
rows = []
for recipe in recipes:
    cells = [cell(f"{recipe}-{p}") for p in precisions]
    rows.append([recipe] + [c[0] for c in cells] + [c[1] for c in cells])
widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
for row in [header, ["-" * w for w in widths], *rows]:
    print("  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths))))
print("\nresume bitwise (text, " + ", ".join(precisions.values()) + "): "
      + " / ".join(bitwise(p) for p in precisions))
EOF
