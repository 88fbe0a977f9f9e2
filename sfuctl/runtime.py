"""Running the event loop: uvloop when installed (several times faster UDP), asyncio otherwise."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Coroutine, TypeVar

from .tokens import scrub

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on the fastest available loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


class CredentialFilter(logging.Filter):
    """Replaces credentials in log records (tokens in URLs, bearer headers) with '***'."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = scrub(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(CredentialFilter())
