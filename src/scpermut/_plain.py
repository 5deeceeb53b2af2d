"""numpy values to plain Python, for JSON files and for ``uns`` records: one converter."""

from __future__ import annotations

import numpy as np


def plain(value, *, arrays: bool = True, none=None):
    """``value`` with numpy scalars as Python numbers, recursively through dicts, lists and tuples.

    Parameters
    ----------
    arrays
        Also turn numpy arrays into lists (False keeps them: ``uns`` stores arrays natively).
    none
        What None becomes (h5ad cannot store None: records written to ``uns`` pass ``""``).
    """
    if isinstance(value, dict):
        return {str(key): plain(item, arrays=arrays, none=none) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item, arrays=arrays, none=none) for item in value]
    if value is None:
        return none
    if isinstance(value, np.generic):
        return value.item()
    if arrays and isinstance(value, np.ndarray):
        return value.tolist()
    return value


def json_default(value):
    """``default=`` hook of ``json.dumps``: numpy values as Python, anything else as its text."""
    if isinstance(value, (np.generic, np.ndarray)):
        return plain(value)
    return str(value)
