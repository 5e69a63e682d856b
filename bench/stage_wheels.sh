#!/usr/bin/env bash
# Stages into .whl/ (git-ignored) the cp312 x86_64 wheels the offline GPU machine lacks to import
# ray 2.58.0 with ray.data and ray.train. Runs on a machine with PyPI access; then one device run of
# `bash bench/gpu.sh` with carry [".whl"] installs them there (see bench/README.md).
#
# The GPU machine already has (Python 3.12): torch, torchvision, numpy, pillow, pyarrow, pandas, fsspec,
# requests, matplotlib, aiohttp, click, filelock, grpcio, msgpack, packaging, protobuf, pyyaml,
# prometheus-client, attrs, setuptools. Everything below is what ray's core, `data` and `train`
# requirements add to that list (checked against each wheel's Requires-Dist by --verify).
#
#   bash bench/stage_wheels.sh            # download + repack + check Requires-Dist
#   bash bench/stage_wheels.sh --verify   # also import ray/ray.data/ray.train in a throwaway py3.12 env
set -euo pipefail

cd "$(dirname "$0")/.."
DEST=.whl
PY=${PYTHON:-python3}
RAY_VERSION=2.58.0
# Same versions as the development venv, so both machines run the same code.
DEPS=(
  jsonschema==4.26.0 referencing==0.37.0 jsonschema-specifications==2025.9.1 rpds-py==2026.9.1
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
  typing-extensions==4.16.0 tensorboardX==2.6.5
)
PLATFORM=(--only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none
          --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
          --platform any)

mkdir -p "$DEST"
rm -f "$DEST"/*.whl
"$PY" -m pip download -q --no-deps "${PLATFORM[@]}" -d "$DEST" "ray==$RAY_VERSION" "${DEPS[@]}"

# ray's wheel is 78 MB, 32 MB of it ray/jars (Java workers, unused here); the device run carries at most
# 64 MiB, so repack it without them under the same file name (RECORD lines dropped too, so pip agrees).
"$PY" - "$DEST"/ray-"$RAY_VERSION"-*.whl <<'EOF'
import os
import sys
import zipfile

path = sys.argv[1]
tmp = path + ".tmp"
with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as dst:
    dropped = 0
    for info in src.infolist():
        if info.filename.startswith("ray/jars/"):
            dropped += 1
            continue
        data = src.read(info)
        if info.filename.endswith(".dist-info/RECORD"):
            lines = data.decode().splitlines(keepends=True)
            data = "".join(ln for ln in lines if not ln.startswith("ray/jars/")).encode()
        dst.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
os.replace(tmp, path)
print(f"repacked {os.path.basename(path)} without ray/jars/ ({dropped} entries dropped)")
EOF

# Every non-extra requirement (plus ray's data/train extras) must be staged or already on the device.
"$PY" - "$DEST" <<'EOF'
import glob
import re
import sys
import zipfile

ON_DEVICE = {"torch", "torchvision", "numpy", "pillow", "pyarrow", "pandas", "fsspec", "requests", "matplotlib",
             "aiohttp", "click", "filelock", "grpcio", "msgpack", "packaging", "protobuf", "pyyaml",
             "prometheus-client", "attrs", "setuptools"}


def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()


wheels = sorted(glob.glob(sys.argv[1] + "/*.whl"))
staged = {norm(re.match(r"([^-]+)-", w.rsplit("/", 1)[1]).group(1)) for w in wheels}
missing = []
for w in wheels:
    with zipfile.ZipFile(w) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        for line in z.read(meta).decode().splitlines():
            if not line.startswith("Requires-Dist:"):
                continue
            req = line.split(":", 1)[1].strip()
            name = norm(re.match(r"[A-Za-z0-9._-]+", req).group(0))
            marker = req.split(";", 1)[1] if ";" in req else ""
            extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)", marker)
            wanted = extra is None or (w.rsplit("/", 1)[1].startswith("ray-") and extra.group(1) in ("data", "train"))
            if extra is None and re.search(r"python_version\s*<\s*['\"]3\.(8|9|10|11)['\"]", marker):
                wanted = False  # backports for older Pythons
            if "sys_platform" in marker and ("darwin\"" in marker or "win32\"" in marker) and "!=" not in marker:
                wanted = False
            if wanted and name not in staged and name not in ON_DEVICE:
                missing.append(f"{w.rsplit('/', 1)[1]}: {req}")
if missing:
    print("MISSING requirements:\n  " + "\n  ".join(sorted(set(missing))))
    sys.exit(1)
print(f"requirements ok: {len(wheels)} wheels staged, every Requires-Dist staged or on the device")
EOF

ls -l "$DEST"
TOTAL=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
echo "total staged: $((TOTAL / 1024 / 1024)) MiB ($TOTAL bytes)"
if [ "$TOTAL" -gt $((55 * 1024 * 1024)) ]; then
  echo "ERROR: staged wheels exceed 55 MiB; the device run carries at most 64 MiB with the repo" >&2
  exit 1
fi

[ "${1:-}" = "--verify" ] || exit 0

# Throwaway Python 3.12 env holding only the device's packages (torch aside), then the staged wheels
# installed exactly as bench/gpu.sh does; ray, ray.data and ray.train must import and run a pipeline.
PY312=${PY312:-python3.12}
"$PY312" -V >/dev/null 2>&1 || PY312=$(ls -d /root/.pyenv/versions/3.12*/bin/python3.12 2>/dev/null | head -1)
[ -n "$PY312" ] || { echo "ERROR: no python3.12 for --verify; set PY312=/path/to/python3.12" >&2; exit 1; }
VENV=${VENV:-/tmp/plantray-py312}
SITE=$VENV-site
[ -x "$VENV/bin/python" ] || "$PY312" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q numpy pillow pyarrow pandas fsspec requests aiohttp click filelock grpcio \
  msgpack packaging protobuf pyyaml prometheus-client attrs setuptools
rm -rf "$SITE"
"$VENV/bin/python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$DEST"/*.whl
PYTHONPATH="$SITE" RAY_USAGE_STATS_ENABLED=0 RAY_DATA_DISABLE_PROGRESS_BARS=1 "$VENV/bin/python" - <<'EOF2'
import sys

import ray
import ray.data
import ray.train
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig  # noqa: F401
from ray.util.queue import Queue  # noqa: F401

print("python", sys.version.split()[0], "ray", ray.__version__, "from", ray.__file__)
ray.init(num_cpus=2, log_to_driver=False, configure_logging=False)
ds = ray.data.range(64).map_batches(lambda b: {"id": b["id"] * 2}, batch_size=16)
total = sum(r["id"] for r in ds.iter_rows())
assert total == 2 * sum(range(64)), total
ray.shutdown()
print("verify ok: ray.init + ray.data pipeline + ray.train imports on Python 3.12 with the staged wheels")
EOF2
