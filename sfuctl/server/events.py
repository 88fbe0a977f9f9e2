"""CloseListeners: how an owner hears that an object it holds closed, so that it alone edits its own lists."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class CloseListeners(Generic[T]):
    """Callbacks registered by an object's owners (mediasoup's `@close`); `emit` calls each once, in order.

    A listener that raises is logged and cannot keep the others from hearing.
    """

    __slots__ = ("_listeners",)

    def __init__(self) -> None:
        self._listeners: list[Callable[[T], None]] = []

    def add(self, listener: Callable[[T], None]) -> None:
        self._listeners.append(listener)

    def emit(self, closed: T) -> None:
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            try:
                listener(closed)
            except Exception:
                log.exception("a close listener of %r failed", closed)
