"""Structured logging; callers pass counts, ids of bus objects and codes, never event content."""

from __future__ import annotations

import logging
import sys

import structlog

#: libraries whose debug records can carry what a worker sends or receives (aiokafka logs each
#: record it sends, key and value): never below INFO, whatever SGBUS_LOG_LEVEL says
LIBRARIES_NEVER_AT_DEBUG = ("aiokafka", "kafka", "faust", "mode", "aiohttp", "urllib3", "httpx", "presidio-analyzer")


def configure(level: str = "info") -> None:
    logging.basicConfig(stream=sys.stderr, level=level.upper(), format="%(message)s")
    floor = max(logging.INFO, logging.getLevelName(level.upper()))
    for name in LIBRARIES_NEVER_AT_DEBUG:
        # On the loggers themselves, not the root: Faust's worker sets up the root logger again
        # at start (mode's dictConfig, which leaves existing loggers' levels alone).
        logging.getLogger(name).setLevel(floor)
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
    )


def get(name: str) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name)
    return logger
