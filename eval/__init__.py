"""The analysis evaluation: incident scenarios and ``python -m eval`` (see eval/runner.py)."""
