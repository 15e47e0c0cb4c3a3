"""Speed, memory and device benchmarks; each measures its baseline in the same run.

A package so that tests can import the slow literal re-implementations kept here
(``bench.literal_data_gen``); nothing in ``bench`` imports ``tests``.
"""
