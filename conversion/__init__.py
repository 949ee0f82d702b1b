"""Conversion of pretrained models: the CMS adapter (retrofit of pretrained FFNs) and checkpoint conversion.

Nothing lives here yet; the adapter builds its levels from `hf_hope.modeling.cms`.
"""
