"""Internals of :mod:`actlab.surgery`: activation kinds, functional-call checks, the report."""
