"""Integrations with other libraries; each submodule imports its library lazily.

- :mod:`actlab.integrations.transformers`: actlab activations as ``config.hidden_act``
  values of Hugging Face transformers models (registration, save/load helpers).
"""
