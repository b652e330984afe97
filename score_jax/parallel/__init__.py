"""Parallelism: the device mesh with its logical-axis rules, and arrays across processes."""
