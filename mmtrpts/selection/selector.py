"""Scores -> rule -> budget -> record: the one home of a selection rule.

:class:`ParameterSelector` is built from the settings a user writes in a
config (``FisherSelectionHook(rule=..., target_ratio=...)``) and checks
them when it is built, before any Fisher pass: an unknown rule, a value
out of range, or an option the chosen rule does not use is an error then,
not after an hour of scoring.  :meth:`ParameterSelector.select` turns a
score map into the checkpoint-safe selection record.

Rules (docs/methods/trpts.md §4, docs/methods/gps.md §1):

- ``'trpts'`` (TR-PTS, ICCV 2025): global top-M% -> per-matrix density
  ``w_l`` -> connections per neuron ``C_l = max(1, w_l / min(w) * c_min)``
  -> per-row top-``C_l``.  With ``target_ratio``, M (and, if needed, a
  continuous ``c_min``) is calibrated so trainable / denominator lands
  within ``tolerance``.
- ``'gps'`` (GPS, CVPR 2024): a uniform ``k`` per row.
- ``'global_topk'``: unstructured top ``num`` (or ``fraction``) entries.

This module deliberately imports neither mmengine nor mmpretrain.
"""
from typing import Dict, Mapping, Optional

from torch import Tensor

from .budget import DENOMINATORS, budget_to_entries, parameter_budget
from .eligibility import FULL
from .global_topk import check_global_topk_args, select_global_topk
from .gps import check_gps_args, select_gps
from .record import SelectionResult, build_record
from .trpts import block_groups, check_trpts_args, select_trpts
from .trpts_calibration import calibrate_trpts

RULES = ('trpts', 'gps', 'global_topk')
GRANULARITIES = ('matrix', 'block')
#: The paper's default budget: 0.34% of the ViT-B/16 backbone, TR-PTS's
#: VTAB-1k setting (docs/methods/trpts.md §9).
DEFAULT_TARGET_RATIO = 0.0034
#: Options of each rule and their defaults; any other option is an error.
#: ``budget_denominator`` is common: every record reports its budget.
RULE_OPTIONS: Dict[str, dict] = dict(
    trpts=dict(
        target_ratio=None,
        m_percent=None,
        c_min=1.0,
        c_max=None,
        weight='density',
        rounding='round',
        granularity='matrix',
        tolerance=0.05,
        budget_denominator='backbone'),
    gps=dict(k=None, budget_denominator='backbone'),
    global_topk=dict(num=None, fraction=None, budget_denominator='backbone'),
)


class ParameterSelector:
    """A validated selection rule with its budget settings.

    Example:
        >>> selector = ParameterSelector(rule='trpts', target_ratio=0.0034)
        >>> record = selector.select(scores, dict(model.named_parameters()),
        ...                          roles)

    Args:
        rule (str): ``'trpts'`` (default), ``'gps'`` or ``'global_topk'``.
        **options: The rule's options (:data:`RULE_OPTIONS`):

            - ``'trpts'``: ``target_ratio`` (trainable parameters -- masked
              selection + densely trained tensors, head included -- over
              the ``budget_denominator``; TR-PTS reports 0.0034 on VTAB-1k
              and 0.0060 on FGVC) *or* ``m_percent`` (an explicit M);
              with neither, ``target_ratio=0.0034``, the paper's VTAB-1k
              budget.  ``c_min`` (1), ``c_max`` (None), ``weight``
              (``'density'``, ``'count'``, ``'sum'``), ``rounding``
              (``'round'``, ``'floor'``, ``'ceil'``), ``granularity``
              (``'matrix'`` or ``'block'``: matrices of a block share one
              ``C_l``), ``tolerance`` (0.05, relative, with
              ``target_ratio``).
            - ``'gps'``: ``k``, connections per row (required).
            - ``'global_topk'``: exactly one of ``num`` and ``fraction``.
            - every rule: ``budget_denominator``, what the reported (and,
              for ``'trpts'``, targeted) ratio is relative to:
              ``'backbone'`` (default; the papers' 0.34% / 0.60%) or
              ``'model'``.

    Raises:
        ValueError: On an unknown rule, an option the rule does not use,
            a missing required option or a value out of range.
    """

    def __init__(self, rule: str = 'trpts', **options):
        if rule not in RULES:
            raise ValueError(f'rule must be one of {RULES}, got {rule!r}')
        allowed = RULE_OPTIONS[rule]
        ignored = sorted(set(options) - set(allowed))
        if ignored:
            raise ValueError(
                f'rule={rule!r} does not use {ignored}; its options are '
                f'{sorted(allowed)}')
        self.rule = rule
        self.options = dict(allowed, **options)
        if self.options['budget_denominator'] not in DENOMINATORS:
            raise ValueError(
                f'budget_denominator must be one of {DENOMINATORS}, got '
                f'{self.options["budget_denominator"]!r}')
        getattr(self, f'_check_{rule}')(self.options)

    # -- validation ---------------------------------------------------------
    @staticmethod
    def _check_trpts(opts: dict) -> None:
        if opts['target_ratio'] is not None and opts['m_percent'] is not None:
            raise ValueError("rule='trpts' takes target_ratio or m_percent, "
                             'not both')
        if opts['target_ratio'] is None and opts['m_percent'] is None:
            opts['target_ratio'] = DEFAULT_TARGET_RATIO
        ratio = opts['target_ratio']
        if ratio is not None and not (isinstance(ratio, (int, float))
                                      and 0 < ratio < 1):
            raise ValueError(f'target_ratio must be in (0, 1), got {ratio!r}')
        check_trpts_args(opts['m_percent'], opts['c_min'], opts['c_max'],
                         opts['weight'], opts['rounding'])
        if opts['granularity'] not in GRANULARITIES:
            raise ValueError(f'granularity must be one of {GRANULARITIES}, '
                             f'got {opts["granularity"]!r}')
        tolerance = opts['tolerance']
        if not isinstance(tolerance, (int, float)) or tolerance < 0:
            raise ValueError(f'tolerance must be >= 0, got {tolerance!r}')

    @staticmethod
    def _check_gps(opts: dict) -> None:
        check_gps_args(opts['k'])

    @staticmethod
    def _check_global_topk(opts: dict) -> None:
        check_global_topk_args(opts['num'], opts['fraction'])

    # -- selection ----------------------------------------------------------
    @property
    def target_ratio(self) -> Optional[float]:
        """The budget ratio (TR-PTS with a budget), else None."""
        return self.options.get('target_ratio')

    def describe(self) -> str:
        """One line: the rule and every option, for logs."""
        options = ', '.join(f'{k}={v}' for k, v in self.options.items())
        return f'{self.rule} ({options})'

    def select(self, scores: Mapping[str, Tensor],
               named_params: Mapping[str, Tensor], roles: Mapping[str, str],
               **extra) -> dict:
        """Apply the rule to a score map; return the selection record.

        Args:
            scores (Mapping[str, Tensor]): Name -> non-negative scores of
                every masked tensor (the eligibility role ``MASKED``).
            named_params (Mapping[str, Tensor]): The model's parameters
                (the budget's denominator and dense part).
            roles (Mapping[str, str]): Name -> eligibility role.
            **extra: Stored in the record as they are (e.g. ``fisher``
                statistics, ``head``).

        Returns:
            dict: The record of :func:`~.record.build_record`, with
            ``budget`` (target, denominator, dense part, trainable and
            realised ratio).
        """
        full = [n for n, role in roles.items() if role == FULL]
        opts = self.options
        budget = parameter_budget(named_params, full, self.target_ratio,
                                  opts['budget_denominator'])
        result = self._apply_rule(scores, budget)
        budget.update(trainable=result.num_selected + budget['full'])
        budget['realized_ratio'] = budget['trainable'] / budget['denominator']
        return build_record(
            result,
            full, {
                n: s.shape
                for n, s in scores.items()
            },
            budget=budget,
            **extra)

    def _apply_rule(self, scores: Mapping[str, Tensor],
                    budget: dict) -> SelectionResult:
        opts = self.options
        if self.rule == 'gps':
            return select_gps(scores, opts['k'])
        if self.rule == 'global_topk':
            return select_global_topk(
                scores, num=opts['num'], fraction=opts['fraction'])
        trpts = dict(
            c_max=opts['c_max'],
            weight=opts['weight'],
            rounding=opts['rounding'])
        if opts['granularity'] == 'block':
            trpts['groups'] = block_groups(list(scores))
        if self.target_ratio is None:
            return select_trpts(
                scores, opts['m_percent'], c_min=opts['c_min'], **trpts)
        target = budget_to_entries(self.target_ratio, budget['denominator'],
                                   budget['full'])
        return calibrate_trpts(
            scores,
            target,
            tolerance=opts['tolerance'],
            c_min=opts['c_min'],
            **trpts)
