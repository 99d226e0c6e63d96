#!/usr/bin/env bash
# The GPU figures of docs/scale.md in one run on one GPU node (under 8 minutes once the venv
# is installed): `make install`, then benchmarks/infer.py and benchmarks/train_ingest.py with
# the GPU on, nvidia-smi sampling utilisation and memory beside each. Prints objects/s, the
# two ratios (end to end / model only, ingest / in-memory), mean and peak GPU utilisation and
# peak GPU memory. Installs nothing beyond `make install`.
#
#   benchmarks/gpu_check.sh            # on a GPU node
#   benchmarks/gpu_check.sh --dry-run  # anywhere: no nvidia-smi, CPU, small skies, the venv
#                                      # as it is (checks the plumbing)
#
# Sizes: INFER_N (default 20000) and TRAIN_N (2000) objects; RAYCAT_BENCH_CPUS (default: all
# cores) sets Ray's CPUs; mock skies are cached in RAYCAT_BENCH_CACHE (~/.cache/raycat-bench).
set -euo pipefail
cd "$(dirname "$0")/.."

DRY=0
case "${1:-}" in
  --dry-run) DRY=1 ;;
  "") ;;
  *) echo "gpu_check: unknown option $1 (only --dry-run)" >&2; exit 2 ;;
esac

if [[ $DRY == 0 ]] && ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu_check: no NVIDIA GPU here (nvidia-smi -L failed): run it on a GPU node, or with --dry-run" >&2
  exit 2
fi

# a dry run uses the venv as it is (a shared development venv is not reinstalled under others)
if [[ $DRY == 0 || ! -x .venv/bin/python ]]; then
  make install >/dev/null
fi
PY=.venv/bin/python
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
export RAYCAT_BENCH_CPUS="${RAYCAT_BENCH_CPUS:-$(nproc)}"
if [[ $DRY == 0 ]]; then
  GPU_FLAG=--gpu
  INFER_N="${INFER_N:-20000}" TRAIN_N="${TRAIN_N:-2000}"
  if ! $PY -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: nvidia-smi sees a GPU but the venv's torch has no CUDA ($($PY -c 'import torch; print(torch.__version__)'))" >&2
    exit 2
  fi
else
  GPU_FLAG="" INFER_N="${INFER_N:-1000}" TRAIN_N="${TRAIN_N:-500}"
fi

OUT="$(mktemp -d -t raycat-gpu-check.XXXXXX)"
echo "gpu_check: $(date -u +%FT%TZ), $(nproc) cores, Ray CPUs $RAYCAT_BENCH_CPUS, logs in $OUT"
[[ $DRY == 0 ]] && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

# run NAME CMD...: the benchmark with nvidia-smi sampling every 0.5 s beside it
run() {
  local name=$1; shift
  local sampler=""
  if [[ $DRY == 0 ]]; then
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits \
      -lms 500 >"$OUT/$name.smi" &
    sampler=$!
  fi
  local started=$SECONDS
  "$@" >"$OUT/$name.log" 2>&1 || { echo "gpu_check: $name failed; last lines:" >&2; tail -20 "$OUT/$name.log" >&2; [[ -n $sampler ]] && kill "$sampler"; exit 1; }
  [[ -n $sampler ]] && kill "$sampler" && wait "$sampler" 2>/dev/null || true
  echo "== $name ($((SECONDS - started)) s)"
  grep -E "objects/s|images/s|ratio|peak memory|waiting" "$OUT/$name.log" | grep -v "raycat:" |
    sed 's/^/   /'
  if [[ $DRY == 0 ]]; then
    # utilisation over the samples where the GPU was busy at all, and overall; peak memory
    awk -F', *' '{n++; u+=$1; if ($1>0) {b++; ub+=$1}; if ($1>mu) mu=$1; if ($2>mm) mm=$2}
      END {printf "   GPU utilisation: mean %.0f%% (%.0f%% over the %d busy samples of %d), peak %d%%; peak GPU memory %d MiB\n",
           u/n, (b ? ub/b : 0), b, n, mu, mm}' "$OUT/$name.smi"
  else
    echo "   GPU: skipped (--dry-run)"
  fi
}

run infer $PY benchmarks/infer.py "$INFER_N" $GPU_FLAG
run train_ingest $PY benchmarks/train_ingest.py "$TRAIN_N" $GPU_FLAG
echo "gpu_check: target on a GPU: model only >= 5,000 objects/s (PDF only) per GPU; end to end >= 0.8x of it; ingest >= 0.9x"
