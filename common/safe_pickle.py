"""Load pickles that hold plain data only: a data file is never code.

``pickle.load`` calls whatever global a pickle names, so a downloaded label file could run any command.
:func:`load` refuses every global but the few plain containers and NumPy arrays need (tuples, lists,
dicts, sets, str, bytes, numbers, None; NumPy arrays, scalars and dtypes as NumPy 1 ``numpy.core.*`` and
NumPy 2 ``numpy._core.*`` write them, with any protocol) with :class:`RefusedPickle`, before anything is
called. The accepted globals work only the way NumPy's own pickles use them, so a file cannot make them
allocate more memory than the data it holds.
"""

from __future__ import annotations

import importlib
import io
import os
import pickle
from pathlib import Path
from typing import Any, Callable

from common.io import UsageError


class RefusedPickle(pickle.UnpicklingError, UsageError):
    """The pickle names a global outside the accepted set; ``str(exc)`` is the one-line message."""

    def __init__(self, message: str, global_name: str) -> None:
        super().__init__(message)
        self.global_name = global_name


def _resolve(modules: tuple[str, ...], name: str) -> Any:
    """``name`` from the first of ``modules`` that has it (NumPy 1 and 2 keep these in different places)."""
    for module in modules:
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    raise AttributeError(f"{'/'.join(modules)} has no {name}")


_NUMPY_CORE = ("numpy._core.multiarray", "numpy.core.multiarray")
_NUMPY_NUMERIC = ("numpy._core.numeric", "numpy.core.numeric")


class _ArrayClass:
    """What a pickle gets for ``numpy.ndarray``: good only as the class argument of ``_reconstruct`` (called
    by itself, ``numpy.ndarray(shape)`` would set aside any amount of memory a file asks for)."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        raise ValueError("numpy.ndarray called directly; a pickled array is rebuilt by _reconstruct only")


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> Any:
    """NumPy's ``_reconstruct`` for exactly what ``ndarray.__reduce__`` writes: an empty ndarray to fill."""
    if subtype is not _ArrayClass or tuple(shape) != (0,):
        raise ValueError(f"_reconstruct({subtype!r}, {shape!r}, ...) is not how NumPy pickles an array")
    return _resolve(_NUMPY_CORE, "_reconstruct")(_resolve(("numpy",), "ndarray"), (0,), dtype)


def _found(modules: tuple[str, ...], name: str) -> Callable[[], Any]:
    return lambda: _resolve(modules, name)


# (module, name) as a pickle spells it -> what the unpickler gets for it.
_NUMPY_GLOBALS: dict[tuple[str, str], Callable[[], Any]] = {
    ("numpy", "ndarray"): lambda: _ArrayClass,
    ("numpy", "dtype"): _found(("numpy",), "dtype"),
}
for _core in ("numpy.core", "numpy._core"):  # NumPy 1 and NumPy 2 spellings, whichever NumPy is installed
    _NUMPY_GLOBALS[f"{_core}.multiarray", "_reconstruct"] = lambda: _reconstruct
    _NUMPY_GLOBALS[f"{_core}.multiarray", "scalar"] = _found(_NUMPY_CORE, "scalar")
    _NUMPY_GLOBALS[f"{_core}.numeric", "_frombuffer"] = _found(_NUMPY_NUMERIC, "_frombuffer")
# Protocols 0-2 spell bytes as _codecs.encode(str, 'latin1') and sets through builtins: each builds its
# value from data already in the file (no bytearray: bytearray(n) would allocate n bytes).
_PLAIN_GLOBALS: dict[tuple[str, str], Callable[[], Any]] = {
    ("_codecs", "encode"): _found(("_codecs",), "encode"),
    ("builtins", "set"): lambda: set,
    ("builtins", "frozenset"): lambda: frozenset,
    ("builtins", "complex"): lambda: complex,
    ("collections", "OrderedDict"): _found(("collections",), "OrderedDict"),
}
# Protocols 0-2 name builtins by their Python 2 module.
_PLAIN_GLOBALS.update({("__builtin__", n): f for (module, n), f in _PLAIN_GLOBALS.items() if module == "builtins"})
ALLOWED_GLOBALS = {**_NUMPY_GLOBALS, **_PLAIN_GLOBALS}


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` accepts only :data:`ALLOWED_GLOBALS`."""

    def __init__(self, file: Any, *, source: str, holds: str) -> None:
        super().__init__(file)
        self._source, self._holds = source, holds

    def find_class(self, module: str, name: str) -> Any:
        if (target := ALLOWED_GLOBALS.get((module, name))) is None:
            refused = f"{module}.{name}"
            raise RefusedPickle(f"{self._source}: refusing to load '{refused}'; {self._holds}", refused)
        return target()


def load(path: str | os.PathLike, holds: str) -> Any:
    """Unpickle ``path`` allowing plain data only; ``holds`` ends the refusal message (what the file should
    hold). RefusedPickle, OSError, or the usual unpickling errors for a damaged file."""
    with open(Path(path), "rb") as f:
        return RestrictedUnpickler(f, source=str(path), holds=holds).load()


def loads(data: bytes, source: str, holds: str) -> Any:
    """:func:`load` for bytes already in memory; ``source`` names them in messages."""
    return RestrictedUnpickler(io.BytesIO(data), source=source, holds=holds).load()
