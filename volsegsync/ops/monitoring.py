"""Whether a run uses the file-system monitor (docs/fsmonitor.md).

Kept apart from :mod:`volsegsync.ops.fsmonitor` so that a run without the monitor
never imports it (ctypes, sockets).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from volsegsync.dataset import Dataset

if TYPE_CHECKING:
    from volsegsync.ops.fsmonitor import Monitor


def monitor_for(ds: Dataset, use: bool | None = None) -> Monitor | None:
    """The monitor a run uses: with ``[fsmonitor] enabled`` in the local config (or
    ``use``); a daemon not running is started for the next runs."""
    if not (ds.config.fsmonitor if use is None else use):
        return None
    from volsegsync.ops.fsmonitor import Monitor

    return Monitor(ds, autostart=use is None)
