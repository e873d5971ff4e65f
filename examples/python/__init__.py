"""Order components in Python: two examples, each runnable as a script
(``python -m examples.python.risk_sized``, ``python -m examples.python.bracketed``)."""
