"""Experiments for "Make models sparser": training-free thresholds on a CNN, Peng et al.'s
modules on a small ViT (Fashion-MNIST). Results in benchmarks/results/experiments_*.json,
write-up in docs/experiments.md."""
