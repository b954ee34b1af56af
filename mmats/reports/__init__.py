"""Reports of research runs: quantstats tearsheets and the walk-forward report (HTML, PDF).

Example::

    from mmats.reports import write_research_report
    paths = write_research_report(run_research("ema_cross", candles), "reports")
"""

from mmats.reports.research_report import write_research_report
from mmats.reports.tearsheet import write_tearsheet

__all__ = ["write_research_report", "write_tearsheet"]
