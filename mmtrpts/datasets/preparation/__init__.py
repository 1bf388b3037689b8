"""Offline data preparation: tree validation, FGVC json splits, manifests.

Used by ``tools/dataset_converters/``; the registered datasets do not
import it.
"""
from .check_fgvc import check_fgvc
from .check_vtab1k import check_vtab1k
from .report import Finding, Report, format_report, sha256_file

__all__ = [
    'Finding', 'Report', 'check_fgvc', 'check_vtab1k', 'format_report',
    'sha256_file'
]
