"""Launchers for Cloud TPU VMs, one GPU node and SLURM (see launch/README.md)."""
