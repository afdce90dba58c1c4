"""Deprecated keyword names kept working for a while: :func:`renamed_keyword`."""

from __future__ import annotations

import warnings
from typing import Any

__all__ = ["renamed_keyword"]


def renamed_keyword(kwargs: dict[str, Any], old: str, new: str, value: Any, default: Any, owner: str) -> Any:
    """Take the deprecated keyword ``old`` out of ``kwargs`` and return the value meant for its new name ``new``.

    A :class:`DeprecationWarning` names both. Giving both names (``new`` set to anything but its default) is an error.

    :param kwargs: the caller's remaining keyword arguments (``old`` is removed from them).
    :param old: the deprecated keyword.
    :param new: the keyword that replaced it.
    :param value: the value ``new`` was given.
    :param default: the default of ``new``.
    :param owner: the class or function, for the messages.
    :return: ``value``, or the old keyword's value when only the old one was given.
    """
    if old not in kwargs:
        return value
    old_value = kwargs.pop(old)
    if value is not default and not (type(value) is type(default) and value == default):
        raise TypeError(f"{owner}: give {new}= only ({old}= is its deprecated name), not both")
    warnings.warn(f"{owner}: {old}= is deprecated, use {new}=", DeprecationWarning, stacklevel=3)
    return old_value
