#!/usr/bin/env bash
# Train the runs a restructuring must leave unchanged, with the cram of git ref REF.
#
#   scripts/golden_runs.sh REF OUTDIR [PKGDIR]
#
# Checks REF out into a temporary worktree, lays it out as an importable `cram` package in
# PKGDIR (default OUTDIR.pkg; the package-dir mapping of pyproject.toml, by symbolic links) and
# runs, with this checkout's .venv and that package first on PYTHONPATH, on one thread:
# demo preset, seed 0: cram, cram-no-consolidation and transformer on SRCD, and cram on the
# token task recall-unmarked. Compare two such folders with scripts/measure_restructure.py.
set -euo pipefail
ref=$1; out=$2; pkg=${3:-$2.pkg}
root=$(git rev-parse --show-toplevel)
python=${PYTHON:-$root/.venv/bin/python}
tree=$(mktemp -d)
git -C "$root" worktree add -f --detach "$tree/src" "$ref" -q
trap 'git -C "$root" worktree remove --force "$tree/src"; rm -rf "$tree"' EXIT
rm -rf "$pkg" && mkdir -p "$pkg"
cp -r "$tree/src/cram" "$pkg/cram"
for d in models kernels consolidation psych_data fitting apps redundancy tasks experiments; do
  cp -r "$tree/src/$d" "$pkg/cram/$d"
done
mkdir -p "$out"
run() { PYTHONPATH="$pkg" "$python" -m cram.cli train --preset demo-labelled --seed 0 --quiet \
          --set train.threads=1 "$@"; }
for model in cram cram-no-consolidation transformer; do
  run --model "$model" --out "$out/srcd-$model"
done
run --model cram --task recall-unmarked --out "$out/token-cram"
