"""What a user sees: sparse-tvm's own progress lines, TVM's logs only when verbose.

Two kinds of noise come from below us:

- TVM's C++ ``LOG(WARNING)`` / ``LOG(INFO)`` lines (``Scope Saving:`` on export, ``Fast mode
  segfaults ...`` when a gather is legalized). TVM has no level to turn them off (its
  ``TVM_LOG_DEBUG`` governs only ``VLOG``), and they are written to file descriptor 2 by native
  code, so :func:`native_quiet` points that descriptor elsewhere around the native calls.
- MetaSchedule's Python logging (hundreds of INFO/DEBUG lines per ``tune_tir``), which
  :func:`metaschedule_logging` keeps in the tuning folder's ``logs/`` unless verbose.

Verbose comes from :func:`set_verbose` (the CLI's ``--verbose``) or ``SPARSE_TVM_VERBOSE=1``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator

MS_LOGGER = "tvm.s_tir.meta_schedule"

_verbose: bool | None = None


def set_verbose(on: bool) -> None:
    """Show TVM's and MetaSchedule's own output (``--verbose``), or hide it (the default)."""
    global _verbose
    _verbose = bool(on)


@contextlib.contextmanager
def verbosity(on: bool | None) -> Iterator[None]:
    """:func:`set_verbose` for the block only (``None``: leave it, the environment decides)."""
    global _verbose
    saved = _verbose
    if on is not None:
        _verbose = bool(on)
    try:
        yield
    finally:
        _verbose = saved


def is_verbose() -> bool:
    """Whether TVM's and MetaSchedule's output reach the user."""
    if _verbose is not None:
        return _verbose
    return os.environ.get("SPARSE_TVM_VERBOSE", "").lower() in ("1", "true", "yes")


@contextlib.contextmanager
def native_quiet() -> Iterator[None]:
    """Hide what native code writes to stderr (fd 2) inside the block, unless verbose.

    Python's own ``sys.stderr`` goes to the same descriptor, so keep the block around native
    calls only (compile, export, load), not around our progress lines. What was hidden is
    dropped, also when the block raises (an error is one line of ours; ``--verbose`` shows
    TVM's own words).
    """
    if is_verbose():
        yield
        return
    with contextlib.ExitStack() as stack:
        try:
            sink = stack.enter_context(tempfile.TemporaryFile())
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):  # no real fd 2 (embedded interpreters)
            saved = None
        if saved is None:
            yield
            return
        try:
            os.dup2(sink.fileno(), 2)
            yield
        finally:
            with contextlib.suppress(ValueError, OSError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


@contextlib.contextmanager
def metaschedule_logging() -> Iterator[None]:
    """Give one ``tune_tir`` call a clean MetaSchedule logger, whatever the process has.

    ``tune_tir`` builds a ``logging.config.dictConfig`` from ``handler.get_name()`` of every
    handler already on the ``tvm.s_tir.meta_schedule`` logger; one unnamed handler (a user's
    ``StreamHandler``, or pytest >= 9.2's capture handlers, which it attaches to every
    non-propagating logger, as that logger is after a first ``tune_tir``) makes it fail with
    ``AttributeError: 'NoneType' object has no attribute 'format'``. So the logger's handlers
    are set aside for the call and put back after it. Its level decides the console handler
    MetaSchedule adds: ERROR unless verbose (the full log still goes to ``WORK_DIR/logs``).
    """
    ms_logger = logging.getLogger(MS_LOGGER)
    saved_handlers = list(ms_logger.handlers)
    saved_level = ms_logger.level
    saved_propagate = ms_logger.propagate
    for handler in saved_handlers:
        ms_logger.removeHandler(handler)
    ms_logger.setLevel(logging.DEBUG if is_verbose() else logging.ERROR)
    try:
        yield
    finally:
        # The handlers MetaSchedule made (console, its log file) are closed and dropped, the
        # process's own are back as they were.
        made = [ms_logger] + [
            logger
            for name, logger in list(logging.root.manager.loggerDict.items())
            if name.startswith(MS_LOGGER + ".task_") and isinstance(logger, logging.Logger)
        ]
        for logger in made:
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
                with contextlib.suppress(Exception):
                    handler.close()
        for handler in saved_handlers:
            ms_logger.addHandler(handler)
        ms_logger.setLevel(saved_level)
        ms_logger.propagate = saved_propagate


def tune_tir(*args, **kwargs):
    """``tvm.s_tir.meta_schedule.tune_tir`` with :func:`metaschedule_logging` around it."""
    from tvm.s_tir import meta_schedule as ms

    with metaschedule_logging():
        return ms.tune_tir(*args, **kwargs)
