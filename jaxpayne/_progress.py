"""The one progress-bar factory of jaxpayne (tqdm, imported lazily).

``progress`` is ``True`` (show a bar), ``False`` (none) or ``None``: show one only when standard
error is a terminal, so that a bar animates in a terminal and a log file stays free of
carriage-return updates (the command line passes ``None`` unless ``--quiet``).
"""

from __future__ import annotations

__all__ = ["progress_bar"]


def progress_bar(iterable=None, *, progress: bool | None, **options):
    """A ``tqdm.auto.tqdm`` bar that is disabled when ``progress`` is False, and when it is None
    and standard error is not a terminal.

    Args:
        iterable: optional iterable to wrap.
        progress: True, False or None (see the module docstring).
        **options: further ``tqdm`` options (``total``, ``desc``, ``unit``, ``leave``...).
    """
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=None if progress is None else not progress, **options)
