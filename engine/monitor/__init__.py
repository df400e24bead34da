"""Sampling memory, CPU and GPUs: the Monitor's engine side."""
