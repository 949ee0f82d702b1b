"""Conversion of pretrained models: the CMS adapter (retrofit of pretrained FFNs) and checkpoint conversion."""
