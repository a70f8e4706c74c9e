#!/usr/bin/env bash
# The model family on dynamically binarized MNIST with one budget (10 epochs, batch 64, Adam 1e-3), each run
# evaluated on the test set at k=1000: the table in README "The model family". Usage:
#   bash benchmarks/family_results.sh <data root> <output folder> [more overrides for every run]
set -euo pipefail
root=${1:?data root (holding MNIST/raw)}; out=${2:?output folder}; shift 2
declare -A runs=(
  [vae]="model=vae"
  [vamp]="model=vae model/prior=vamp"
  [iaf]="model=vae model/posterior=iaf"
  [hvae]="model=hvae"
)
for name in vae vamp iaf hvae; do
  python -m vae_lightning.train ${runs[$name]} data.root="$root" data.binarize=true trainer.max_epochs=10 \
    hydra.run.dir="$out/$name" trainer.enable_progress_bar=false "$@"
  python -m vae_lightning.eval ckpt_path="$out/$name/checkpoints/last.ckpt" eval.iw_samples=1000
done
