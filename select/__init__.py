"""Hands out the standard library's `select` module when `import select` runs from the repository root.

The SELECT script is named `select.py`, like the standard-library module `select` (used by
subprocess, selectors, asyncio, multiprocessing). Python puts the directory of the running
script, or the current directory for `python -c` and `python -m`, first on `sys.path`, so from
the repository root `import select` would find our script. A package directory takes precedence
over a module file of the same name, so the import finds this package instead, which loads the
real module and puts it in its own place in `sys.modules`. `python select.py` is unaffected.
"""

import importlib.machinery
import importlib.util
import os
import sys

_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if "select" in sys.builtin_module_names:
    _spec = importlib.machinery.BuiltinImporter.find_spec("select")
else:
    _path = [p for p in sys.path if os.path.abspath(p or os.curdir) != _root]
    _spec = importlib.machinery.PathFinder.find_spec("select", _path)
if _spec is None:
    raise ImportError(
        f"the standard-library module 'select' was not found outside {_root}; "
        "run Python with -P (or PYTHONSAFEPATH=1) so the repository root is not searched first"
    )
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
sys.modules["select"] = _module
