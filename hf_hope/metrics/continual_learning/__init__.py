"""The `continual_learning` evaluate metric: `continual_learning.py` is the script, `summary.py` its math.

Load the metric with `hf_hope.metrics.load_continual_metric()`; this package only exists so that both files are
installed with hf_hope. Importing it does not import `evaluate`.
"""
