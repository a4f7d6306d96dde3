"""The benchmarks: a package, so that the scale suite's modules import one another as `bench.*`.

`bench/suite.py` is the scale suite's entry point (`make bench`); `bench/audit.py` and
`bench/repair.py` are stand-alone 20k local-mode scripts, run by hand.
"""
