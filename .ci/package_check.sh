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
echo "package: the wheel installs and runs outside the checkout ($repo)"
