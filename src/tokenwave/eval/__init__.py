"""Evaluation of codecs: metrics (:mod:`tokenwave.eval.metrics`), baselines and the ``tokenwave eval`` runner.

The metric dependencies are an optional extra (``pip install tokenwave[eval]``); the core package never
imports them, and each metric imports its library on first use.
"""
