"""Sparsity methods, one module each; every module here registers into ``actlab.sparse.METHODS``
when the registry is first used (adding a method is adding one file)."""
