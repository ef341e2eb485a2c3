"""Tally's development kit: emulator clients, accounts, step builders and test doubles.

One package for the tests, the demo and the benchmarks (installed editable into `.venv`
by `make setup`, so nothing edits `sys.path`).
"""
