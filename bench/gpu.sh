#!/usr/bin/env bash
# The single device command of the GPU benchmark (issue 7): `bash bench/gpu.sh`, run in the repo root of
# the GPU machine with carry [".whl"] (staged here by bench/stage_wheels.sh). Installs the staged Ray
# wheels, shows the GPU, runs bench/gpu_bench.py under a hard timeout, and always leaves
# $OUT/gpu_results.json, $OUT/gpu_results.md and the log $OUT/gpu.log, whatever fails.
#
#   OUT=/tmp/g bash bench/gpu.sh                      # defaults: budget 330 s, hard timeout 420 s
#   OUT=/tmp/g PYTHON=.venv/bin/python SKIP_WHEELS=1 bash bench/gpu.sh --quick   # local dry run
set -uo pipefail

cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/gpu}
PY=${PYTHON:-python3}
SITE=${SITE:-/tmp/site}
BUDGET=${BENCH_BUDGET:-330}
HARD_TIMEOUT=${BENCH_TIMEOUT:-420}
mkdir -p "$OUT"
export RAY_USAGE_STATS_ENABLED=0 RAY_DATA_DISABLE_PROGRESS_BARS=1 PYTHONUNBUFFERED=1

unpack_wheels() {
  # A wheel is a zip of the install tree (none of the staged ones has a .data dir); restore the modes
  # zipfile drops, since ray's raylet and gcs_server must stay executable.
  "$PY" - "$SITE" .whl/*.whl <<'PYEOF'
import os
import sys
import zipfile

site = sys.argv[1]
for wheel in sys.argv[2:]:
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            path = z.extract(info, site)
            mode = (info.external_attr >> 16) & 0o777
            if mode and not info.is_dir():
                os.chmod(path, mode)
PYEOF
}

main() {
echo "== $(date -u +%FT%TZ) plantray GPU benchmark in $PWD"
if [ -z "${SKIP_WHEELS:-}" ]; then
  if ls .whl/*.whl >/dev/null 2>&1; then
    # No index, no deps: exactly the staged wheels; --no-compile keeps the install to a few seconds.
    if "$PY" -m pip --version >/dev/null 2>&1; then
      "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" .whl/*.whl
    else
      echo "no pip in $PY (a uv venv?): unpacking the wheels directly"
      unpack_wheels
    fi && echo "installed $(ls .whl/*.whl | wc -l) staged wheels into $SITE" \
      || echo "WARNING: wheel install failed; Ray stages will be skipped"
  else
    echo "WARNING: no .whl/ (run bench/stage_wheels.sh and carry .whl); Ray stages will be skipped"
  fi
  export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi

nvidia-smi || echo "nvidia-smi not available"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda available:', torch.cuda.is_available(), \
  torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" || echo "WARNING: torch check failed"
"$PY" -c "import ray, ray.data, ray.train; print('ray', ray.__version__, ray.__file__)" \
  || echo "WARNING: ray does not import; the benchmark records its Ray stages as skipped"

timeout -k 15 "$HARD_TIMEOUT" "$PY" bench/gpu_bench.py --out "$OUT" --budget "$BUDGET" "$@"
rc=$?
echo "== gpu_bench.py exit status $rc"
[ "$rc" = 124 ] && echo "WARNING: hard timeout ($HARD_TIMEOUT s); results hold the stages finished before it"

# Ray daemons started by the benchmark must not outlive it (they would hold this log open).
"$PY" -m ray.scripts.scripts stop --force >/dev/null 2>&1 || true

# The benchmark rewrites both files after every stage; only a crash before its first stage leaves none.
if [ ! -s "$OUT/gpu_results.json" ]; then
  printf '{"status": "gpu_bench.py produced no results", "exit_status": %s}\n' "$rc" > "$OUT/gpu_results.json"
fi
if [ ! -s "$OUT/gpu_results.md" ]; then
  printf '# plantray GPU benchmark\n\ngpu_bench.py produced no results (exit status %s); see gpu.log.\n' "$rc" \
    > "$OUT/gpu_results.md"
fi
cat "$OUT/gpu_results.md"
}

# A pipe rather than exec > >(tee): the log is complete when this script returns.
main "$@" 2>&1 | tee -a "$OUT/gpu.log"
exit 0
