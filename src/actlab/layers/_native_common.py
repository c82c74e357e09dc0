"""What the layers' native libraries (:mod:`~actlab.layers._kan_native`,
:mod:`~actlab.layers._norm_native`) share: the status functions each of them exports."""

from __future__ import annotations

from collections.abc import Callable

from actlab._ext import Extension, compiled_isa, try_load
from actlab._ext import unavailable_reason as _ext_reason

__all__ = ["status_functions"]


def status_functions(
    ext: Extension,
) -> tuple[Callable[[], bool], Callable[[], str], Callable[[], str]]:
    """``available``, ``unavailable_reason`` and ``kernel_isa`` of the library ``ext``."""

    def available() -> bool:
        """Whether the library is loaded (building it on the first call; warns once if it
        cannot)."""
        return try_load(ext) is not None

    def unavailable_reason() -> str:
        """Why :func:`available` is False ('' when it is True or was not asked yet)."""
        return _ext_reason(ext)

    def kernel_isa() -> str:
        """The ISA the loaded library was compiled for ('' when unavailable)."""
        return compiled_isa(ext)

    return available, unavailable_reason, kernel_isa
