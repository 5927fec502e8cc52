"""The MANGO demo (``mango demo``, ``make demo``): an application of the library, not part of it.

It starts the policy service on loopback, trains one small job three ways (adaptive through the service,
plain AdamW, a static setting) and writes a report. Modules, one job each:

* :mod:`demo.args` - :class:`DemoArgs` (every flag, documented) and the choice of the static baseline;
* :mod:`demo.runs` - one training run per call (:func:`train_run`), summarized as :class:`RunResult`;
* :mod:`demo.report` - objective scores, the verdict and the summary table;
* :mod:`demo.plot` - ``report.png`` (:func:`plot_report`);
* :mod:`demo.app` - the flow (:func:`run_demo`) and the command (:func:`main`, with its signal handling);
* :mod:`demo.pool` - ``mango verdict``: one verdict over the seeds of several demos' ``summary.json``.

The service itself is launched by :mod:`policy_service.launch`, the launcher the benchmarks use too.
"""

from __future__ import annotations

from demo.app import Terminated, main, run_demo
from demo.args import FIXED_STATIC, DemoArgs, choose_static, parse_setting
from demo.plot import plot_report
from demo.report import format_table, format_verdict, objective_scores
from demo.runs import Point, RunResult, train_run

__all__ = [
    "FIXED_STATIC",
    "DemoArgs",
    "Point",
    "RunResult",
    "Terminated",
    "choose_static",
    "format_table",
    "format_verdict",
    "main",
    "objective_scores",
    "parse_setting",
    "plot_report",
    "run_demo",
    "train_run",
]
