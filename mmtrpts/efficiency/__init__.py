"""Efficiency benchmarks: time, memory and optimizer state of training and
inference, each measured against baselines in the same run.

(In this project "benchmark" alone means an evaluation suite of tasks --
VTAB-1k, FGVC or the generated mini-VTAB; the timing code lives here.)
"""
