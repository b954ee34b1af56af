"""Reports of research runs: quantstats tearsheets and the walk-forward report (HTML, PDF).

Example::

    from mmats.reports import write_research_report
    paths = write_research_report(run_research("ema_cross", candles), "reports")

The names load on first use, so that importing a light module of this package (the PDF
worker, forked before matplotlib is imported) does not import matplotlib.
"""

__all__ = ["write_research_report", "write_tearsheet"]


def __getattr__(name):
    if name == "write_research_report":
        from mmats.reports.research_report import write_research_report

        return write_research_report
    if name == "write_tearsheet":
        from mmats.reports.tearsheet import write_tearsheet

        return write_tearsheet
    raise AttributeError(f"module 'mmats.reports' has no attribute {name!r}")
