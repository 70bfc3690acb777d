"""featlab's one measure of CPU time, for training budgets (``cpu_time`` in ``metrics.jsonl``) and reconstruction
stages (:class:`featlab.sfm.pipeline.StageClock`).

CPU seconds = user + system time of this process (all its threads) and of its child processes that have finished
(``getrusage`` SELF + CHILDREN). Unlike the wall clock it does not depend on what else runs on the machine. A child
that is still running (a persistent data-loader worker) is counted only once it exits.
"""
from __future__ import annotations

import resource


def cpu_seconds() -> float:
    """CPU seconds used so far by this process and its finished children (module doc)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
