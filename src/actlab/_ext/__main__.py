"""Prebuild native extensions: ``python -m actlab._ext MODULE [MODULE ...]``.

Imports each module, builds (or loads from the cache) every :class:`~actlab._ext.Extension`
declared at its top level, prints one line per extension and exits 1 if any is unavailable.
"""

from __future__ import annotations

import importlib
import sys
import warnings

from actlab._ext._builder import Extension, NativeUnavailable, load


def main(argv: list[str] | None = None) -> int:
    """Build the extensions of the given modules; 0 if all loaded, 1 otherwise, 2 on misuse."""
    names = sys.argv[1:] if argv is None else argv
    if not names or any(n.startswith("-") for n in names):
        print(
            "usage: python -m actlab._ext MODULE [MODULE ...]  (e.g. actlab.activations._native)",
            file=sys.stderr,
        )
        return 2
    failed = 0
    for mod_name in names:
        try:
            mod = importlib.import_module(mod_name)
        except ImportError as e:
            print(f"actlab._ext: error: cannot import {mod_name}: {e}", file=sys.stderr)
            return 2
        exts = [v for v in vars(mod).values() if isinstance(v, Extension)]
        if not exts:
            print(f"actlab._ext: error: {mod_name} declares no Extension", file=sys.stderr)
            return 2
        for ext in exts:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # the reason is printed below
                    lib = load(ext)
            except NativeUnavailable as e:
                print(f"{ext.name}: unavailable: {e.reason}")
                failed += 1
                continue
            how = "built" if lib.built else "cached"
            print(f"{ext.name}: {how} ({lib.isa}) {lib.path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
