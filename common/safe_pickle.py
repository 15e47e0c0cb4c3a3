"""Load pickles that hold plain data only: a data file is never code.

``pickle.load`` calls whatever global a pickle names, so a downloaded label file could run any command.
:func:`load` refuses every global except the few that plain containers and NumPy arrays need, and raises
:class:`RefusedPickle` (one line naming the file and the refused global) before anything is called.

Accepted: tuples, lists, dicts, sets, str, bytes, int, float, complex, bool, None (no global needed),
NumPy arrays (including object arrays of accepted values), NumPy scalars and dtypes, as written by
NumPy 1 (``numpy.core.*``) and NumPy 2 (``numpy._core.*``) with any pickle protocol; whichever NumPy is
installed reads both spellings. The accepted globals are used only the way NumPy's own pickles use
them, so a file cannot make them allocate more memory than the data it holds.
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
    """The pickle names a global outside the accepted set; ``str(exc)`` is the one-line message.

    A ``ValueError`` too, so callers that turn bad input into a one-line error catch it as they do
    other malformed files.
    """

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
    """What a pickle gets for ``numpy.ndarray``: good only as the class argument of ``_reconstruct``.

    Called by itself, ``numpy.ndarray(shape)`` would set aside any amount of memory a file asks for.
    """

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
    ("numpy.core.multiarray", "_reconstruct"): lambda: _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): lambda: _reconstruct,
    ("numpy.core.multiarray", "scalar"): _found(_NUMPY_CORE, "scalar"),
    ("numpy._core.multiarray", "scalar"): _found(_NUMPY_CORE, "scalar"),
    ("numpy.core.numeric", "_frombuffer"): _found(_NUMPY_NUMERIC, "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"): _found(_NUMPY_NUMERIC, "_frombuffer"),
}
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
_PLAIN_GLOBALS.update(
    {("__builtin__", name): target for (module, name), target in _PLAIN_GLOBALS.items() if module == "builtins"}
)
ALLOWED_GLOBALS = {**_NUMPY_GLOBALS, **_PLAIN_GLOBALS}


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` accepts only :data:`ALLOWED_GLOBALS`."""

    def __init__(self, file: Any, *, source: str, holds: str) -> None:
        super().__init__(file)
        self._source = source
        self._holds = holds

    def find_class(self, module: str, name: str) -> Any:
        target = ALLOWED_GLOBALS.get((module, name))
        if target is None:
            raise RefusedPickle(
                f"{self._source}: refusing to load '{module}.{name}'; {self._holds}", f"{module}.{name}"
            )
        return target()


def load(path: str | os.PathLike, holds: str) -> Any:
    """Unpickle ``path`` allowing plain data only.

    ``holds`` completes the refusal message with what the file should contain, e.g.
    ``"label files hold (names, labels) only"``. Raises :class:`RefusedPickle` for a forbidden global,
    ``OSError`` when the file cannot be read, and the usual unpickling errors (``pickle.UnpicklingError``,
    ``EOFError``, ``ValueError``, ...) for a damaged file.
    """
    with open(Path(path), "rb") as f:
        return RestrictedUnpickler(f, source=str(path), holds=holds).load()


def loads(data: bytes, source: str, holds: str) -> Any:
    """:func:`load` for bytes already in memory; ``source`` names them in messages."""
    return RestrictedUnpickler(io.BytesIO(data), source=source, holds=holds).load()
