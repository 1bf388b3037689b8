"""Benchmark datasets: VTAB-1k (NOAH/SSF files) and FGVC (VPT jsons)."""
from .fgvc import FGVC
from .vtab1k import VTAB1k

__all__ = ['VTAB1k', 'FGVC']
