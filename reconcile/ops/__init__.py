"""The library operations the CLI calls, one module each; none prints or exits.

Each returns a report with `to_json()` and `exit_code` (`reconcile.report.Report`).
What two operations share lives in a module both import (`scan`, `plan`, `apply`),
never in one of them.
"""
