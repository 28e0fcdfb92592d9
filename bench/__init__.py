"""Benchmarks of the ingest/search core, each figure next to a raw baseline measured in the same run.

Run ``make bench`` (``.venv/bin/python -m bench``); ``--quick`` for a smoke test. See ``bench/__main__.py``.
"""
