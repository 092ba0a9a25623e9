#!/usr/bin/env bash
# What a user gets from `pip install .`: the wheel in a fresh venv, run from a folder outside the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"
data="${CIFARLAB_SHARED:-$(cd .. && pwd)/shared/data}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

.venv/bin/pip wheel -q --no-deps . -w "$work/dist"
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q "$work"/dist/cifarlab-*.whl
cli="$work/venv/bin/cifarlab"

mkdir "$work/empty" && cd "$work/empty"
"$cli" --version
"$cli" models
"$cli" sweep grid_resvgg16_24 --dry-run | tail -1 | grep -q "^48 runs" || { echo "package: sweep preset not found"; exit 1; }
"$cli" bn-study --help >/dev/null
"$cli" pj2 --scale smoke --help >/dev/null
CIFARLAB_CACHE="$work/cache" "$cli" train quick --data "$data" --out "$work/run" \
    --set data.n_items=512 train.epochs=1 train.progress=false train.log_tensorboard=false
test -f "$work/run/summary.json"
# The Python API from the wheel: fit twice in one folder, and load().predict gives `cifarlab predict`'s labels
TMPDIR="$work" CIFARLAB_CACHE="$work/cache" CIFARLAB_DATA="$data" "$work/venv/bin/python" - "$cli" <<'EOF'
import json, subprocess, sys
from importlib.resources import files

import cifarlab
from PIL import Image

over = {"data.n_items": 512, "data.n_test": 200, "train.epochs": 1, "train.progress": False}
runs = [cifarlab.fit("quick", overrides=over) for _ in range(2)]
print("package: fit twice:", [r.summary["final_test_acc"] for r in runs])
images = cifarlab.load_data("cifar10").test_x[:8]
paths = [f"img{i}.png" for i in range(len(images))]
for p, im in zip(paths, images):
    Image.fromarray(im.numpy()).save(p)
out = subprocess.run([sys.argv[1], "predict", str(runs[0].run_dir), *paths, "--json"], capture_output=True, check=True)
cli = [r["top"][0]["index"] for r in json.loads(out.stdout)]
assert cifarlab.load(runs[0].run_dir).predict(paths).tolist() == cli, "package: load().predict differs from predict"
assert files("cifarlab").joinpath("py.typed").is_file(), "package: py.typed is not in the wheel"
EOF
echo "package: the wheel installs and runs outside the checkout ($repo)"
