"""How the loader starts its worker processes: the ``"auto"`` start method and the checks before a start.

``start_method="auto"`` (the default) forks where forking is safe and uses the fork server (or
``spawn``) elsewhere:

* **fork** copies this process: the dataset, the transforms and the classes of a notebook, of code
  read from standard input or given with ``python -c`` reach the workers without pickling and
  without importing ``__main__`` again, and an unguarded script is not re-run. What makes it unsafe
  are *other threads*: the child has only the forking thread, and a lock that another thread held
  at that moment stays locked in the child forever. So ``"auto"`` forks only when no other Python
  thread runs (``threading.enumerate()``) apart from the idle service threads of a Jupyter/IPython
  kernel and tqdm's monitor (the kernel is written to survive forks of its main thread, which was
  multiprocessing's default on Linux until Python 3.14), when JAX is not imported (it declares
  itself incompatible with fork and warns at every fork), and only on platforms where fork is the
  traditional default (not macOS, whose system libraries are not fork-safe, nor Windows, which has
  no fork). This is torch's DataLoader behaviour on Linux (it forks by default) made conditional.
* Native thread pools cannot be seen from Python, and counting the process's threads at the OS
  level (``/proc/self/task``) would rule fork out almost always: ``import numpy`` alone starts
  OpenBLAS's pool. What matters is whether the *worker* needs a lock or pool state that the fork
  left behind, and for the pools met in practice it does not: OpenBLAS and Intel OpenMP shut their
  threads down around a fork (``pthread_atfork``); delira.augment's pool is re-created in a forked
  child; torch's OpenMP pool (GNU libgomp) is *not* fork-safe -- a forked child that uses more than
  one torch thread hangs -- so every worker limits torch to one thread, as torch's DataLoader does.
  TensorFlow's runtime pools are left behind unusable too: a dataset or transform that runs
  TensorFlow code in the workers needs ``start_method="forkserver"`` (``to_tf_dataset`` runs
  TensorFlow in the main process only, which is fine).

With ``"forkserver"`` or ``"spawn"`` a worker is a fresh interpreter: it re-creates ``__main__`` by
re-running the main script (as ``__mp_main__``) and unpickles the dataset, the transforms and
``collate_fn``, whose classes and functions it imports by name. :func:`check_workers_can_start`
finds, in the main process and before any worker starts, what would make that fail: a class or
function defined in a ``__main__`` that workers cannot import (a notebook, ``python -c``, standard
input) or defined under the script's ``if __name__ == "__main__":`` block, a main script read from
standard input, and a script that starts the workers from its unguarded top-level code (each
worker would run it again). A worker that still re-enters the script while it starts (a case the
check cannot see) stops with :data:`EXIT_MAIN_REENTERED`, which the main process explains.
"""

from __future__ import annotations

import ast
import multiprocessing
import os
import pickle
import sys
import threading
import types
from collections.abc import Callable, Iterable
from multiprocessing.reduction import ForkingPickler
from typing import Any

__all__ = [
    "EXIT_MAIN_REENTERED",
    "START_METHODS",
    "check_workers_can_start",
    "default_start_method",
    "exit_if_bootstrapping",
    "fork_blockers",
    "resolve_start_method",
    "validate_start_method",
]

START_METHODS = ("auto", "fork", "forkserver", "spawn")
"""The accepted values of ``DataLoader(start_method=...)``."""

EXIT_MAIN_REENTERED = 78
"""Exit status of a worker that stopped because re-running the main script started workers again."""

# Threads of these packages are idle service threads that tolerate a fork of the main thread.
_SERVICE_THREAD_MODULES = ("ipykernel", "IPython", "jupyter_client", "zmq", "tqdm")
_SERVICE_THREAD_EXCLUDED = ("ipykernel.subshell",)  # subshells run user code concurrently
# Imported, these runtimes declare themselves incompatible with fork.
_FORK_UNSAFE_MODULES = {
    "jax": "JAX is imported (it is multithreaded and declares itself incompatible with fork)",
}


# -- choosing the start method --------------------------------------------------------------------------
def _is_service_thread(thread: threading.Thread) -> bool:
    target = getattr(thread, "_target", None)  # set while the thread runs
    modules = [type(thread).__module__, getattr(target, "__module__", None) or ""]
    for module in modules:
        if module.startswith(_SERVICE_THREAD_EXCLUDED):
            return False
    return any(m == p or m.startswith(p + ".") for m in modules for p in _SERVICE_THREAD_MODULES)


def fork_blockers() -> list[str]:
    """Why ``start_method="auto"`` would not fork in this process now (empty: it would fork).

    Returns:
        Human-readable reasons: the platform, each other running Python thread (by name, except
        the service threads of a Jupyter/IPython kernel and tqdm's monitor), an imported JAX.
    """
    reasons = []
    if "fork" not in multiprocessing.get_all_start_methods():
        reasons.append(f"this platform ({sys.platform}) has no fork")
    elif sys.platform == "darwin":
        reasons.append("on macOS forking is unsafe (system libraries are not fork-safe)")
    current = threading.current_thread()
    others = [t for t in threading.enumerate() if t is not current and not _is_service_thread(t)]
    if others:
        names = ", ".join(repr(t.name) for t in others[:5]) + (" ..." if len(others) > 5 else "")
        reasons.append(f"{len(others)} other thread(s) are running ({names})")
    for module, reason in _FORK_UNSAFE_MODULES.items():
        if module in sys.modules:
            reasons.append(reason)
    return reasons


def _non_fork_method() -> str:
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def default_start_method() -> str:
    """The start method ``"auto"`` chooses in this process now.

    ``"fork"`` when :func:`fork_blockers` finds nothing (no other threads, a platform where fork is
    the traditional default), else ``"forkserver"`` where available (Linux, macOS) or ``"spawn"``.
    The loader decides each time it starts workers (each epoch, unless ``persistent_workers``).
    """
    return _non_fork_method() if fork_blockers() else "fork"


def validate_start_method(requested: Any) -> str:
    """``requested`` checked: ``"auto"`` (also for ``None``), ``"fork"``, ``"forkserver"`` or ``"spawn"``.

    Raises:
        TypeError: ``requested`` is not a string.
        ValueError: an unknown method, or one this platform does not offer.
    """
    if requested is None:
        return "auto"
    if not isinstance(requested, str):
        raise TypeError(
            f"start_method must be a string, one of {', '.join(map(repr, START_METHODS))}; "
            f"got {requested!r} ({type(requested).__name__})"
        )
    if requested not in START_METHODS:
        raise ValueError(
            f"start_method must be one of {', '.join(map(repr, START_METHODS))}, got {requested!r}; "
            "'auto' (the default) forks where that is safe"
        )
    available = multiprocessing.get_all_start_methods()
    if requested != "auto" and requested not in available:
        raise ValueError(
            f"start_method={requested!r} is not available on this platform ({sys.platform}); "
            f"available: {', '.join(map(repr, available))}, or 'auto'"
        )
    return requested


def resolve_start_method(requested: Any) -> tuple[str, list[str]]:
    """Validate ``start_method`` (see :func:`validate_start_method`) and resolve ``"auto"``.

    Returns:
        ``(method, reasons)``: the method to start workers with and, for ``"auto"``, the reasons
        it did not fork (:func:`fork_blockers`; empty otherwise).
    """
    requested = validate_start_method(requested)
    if requested != "auto":
        return requested, []
    reasons = fork_blockers()
    return (_non_fork_method() if reasons else "fork"), reasons


# -- what a fresh worker re-creates of __main__ ---------------------------------------------------------
def _absolute(path: str) -> str:
    """``path`` as multiprocessing resolves the main script's (relative to the start directory)."""
    if not os.path.isabs(path) and multiprocessing.process.ORIGINAL_DIR is not None:
        path = os.path.join(multiprocessing.process.ORIGINAL_DIR, path)
    return os.path.normpath(path)


class _Main:
    """How a worker started with forkserver/spawn re-creates ``__main__`` (see multiprocessing.spawn)."""

    def __init__(self) -> None:
        module = sys.modules.get("__main__")
        self.module = module
        self.path: str | None = None  # the script a worker re-runs
        self.rerun = False  # workers re-run it (as __mp_main__) and find its top-level names
        self.broken = False  # workers fail while re-running it, whatever they load
        spec_name = getattr(getattr(module, "__spec__", None), "name", None)
        file = getattr(module, "__file__", None)
        if spec_name is not None:  # python -m pkg.mod; a package's __main__ is never re-run
            self.rerun = not (spec_name == "__main__" or spec_name.endswith(".__main__"))
            self.path = _absolute(file) if file else None
            self.what = (
                f"the module {spec_name} (run with python -m)"
                if self.rerun
                else f"{spec_name} (a package's __main__.py run with python -m, which workers do not re-run)"
            )
        elif file is not None:
            self.path = _absolute(file)
            if os.path.splitext(os.path.basename(self.path))[0] == "ipython":
                self.what = "an IPython session (workers do not re-run it)"
            elif os.path.isfile(self.path):
                self.rerun = True
                self.what = f"the script {self.path}"
            else:
                self.broken = True
                self.what = (
                    "code read from standard input"
                    if file == "<stdin>" or sys.argv[:1] == ["-"]
                    else f"code whose file {self.path!r} does not exist"
                )
        elif sys.argv[:1] == ["-c"]:
            self.what = "code given with python -c"
        else:
            self.what = "a notebook or interactive session (it has no file)"

    def tree(self) -> ast.Module | None:
        if self.path is None:
            return None
        try:
            with open(self.path, encoding="utf-8") as f:
                return ast.parse(f.read(), self.path)
        except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
            return None


def _tests_name(node: ast.expr) -> bool:
    """True for a test like ``__name__ == "__main__"`` (any comparison involving ``__name__``)."""
    return any(isinstance(n, ast.Name) and n.id == "__name__" for n in ast.walk(node))


def _walk_binding_scope(node: ast.AST) -> Iterable[ast.AST]:
    """``ast.walk`` that does not enter function, class or lambda bodies (their names are local)."""
    todo = [node]
    while todo:
        current = todo.pop()
        yield current
        if current is not node and isinstance(
            current, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)
        ):
            continue
        todo.extend(ast.iter_child_nodes(current))


def _bound_names(statements: Iterable[ast.stmt]) -> dict[str, int]:
    """Module-level names that ``statements`` bind (classes, functions, imports, assignments): line."""
    out: dict[str, int] = {}
    for stmt in statements:
        for node in _walk_binding_scope(stmt):
            names: list[str] = []
            if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                names = [node.name]
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [(a.asname or a.name).split(".")[0] for a in node.names]
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names = [node.id]
            for name in names:
                out[name] = min(out.get(name, 1 << 30), getattr(node, "lineno", 0))
    return out


def _guard_only_names(tree: ast.Module) -> dict[str, int]:
    """Names bound only inside a top-level ``if __name__ ...:`` block (invisible to re-running workers)."""
    if any(isinstance(n, ast.ImportFrom) and any(a.name == "*" for a in n.names) for n in ast.walk(tree)):
        return {}  # a star import may bind anything: no claim
    guarded = [s for s in tree.body if isinstance(s, ast.If) and _tests_name(s.test)]
    outside = _bound_names(s for s in tree.body if s not in guarded)
    return {name: line for name, line in _bound_names(guarded).items() if name not in outside}


def _main_frames(main: _Main) -> list[types.FrameType]:
    """The frames running ``__main__``'s top-level code on this thread's stack."""
    frames = []
    namespace = getattr(main.module, "__dict__", None)
    frame = sys._getframe(1) if hasattr(sys, "_getframe") else None
    while frame is not None:
        if frame.f_code.co_name == "<module>" and frame.f_globals is namespace:
            frames.append(frame)
        frame = frame.f_back
    return frames


def _unguarded_start_line(main: _Main, tree: ast.Module | None) -> int | None:
    """The line of the main script's top-level statement starting the workers, if no ``if`` guards it.

    None when that cannot be established (no such frame, code run through ``exec``, a statement
    under any ``if``): then the workers themselves detect a re-entry.
    """
    if tree is None or main.path is None:
        return None
    frames = _main_frames(main)
    if len(frames) != 1 or _absolute(frames[0].f_code.co_filename) != main.path:
        return None
    line = frames[0].f_lineno
    for stmt in tree.body:
        if stmt.lineno <= line <= (stmt.end_lineno or stmt.lineno):
            return None if isinstance(stmt, ast.If) else line
    return None


# -- finding what the workers would have to import from __main__ ------------------------------------------
class _NullSink:
    def write(self, data: Any) -> int:  # the pickler ignores the result
        return 0


class _MainReferenceFinder(ForkingPickler):
    """Pickles to nowhere, recording the classes and functions pickled by reference to ``__main__``."""

    def __init__(self) -> None:
        super().__init__(_NullSink(), pickle.HIGHEST_PROTOCOL)
        self.found: dict[str, str] = {}

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, (type, types.FunctionType)) and getattr(obj, "__module__", None) == "__main__":
            kind = "class" if isinstance(obj, type) else "function"
            self.found.setdefault(getattr(obj, "__qualname__", repr(obj)), kind)
        return NotImplemented


def _shallow_main_references(objects: Iterable[Any]) -> dict[str, str]:
    """Classes and functions of ``__main__`` among ``objects`` and their types (no pickling)."""
    found: dict[str, str] = {}
    for obj in objects:
        candidates = [obj, type(obj)]
        if isinstance(obj, types.MethodType):
            candidates += [obj.__func__, type(obj.__self__)]
        for c in candidates:
            if isinstance(c, (type, types.FunctionType)) and getattr(c, "__module__", None) == "__main__":
                found.setdefault(c.__qualname__, "class" if isinstance(c, type) else "function")
    return found


def _describe(found: dict[str, str], limit: int = 4) -> str:
    items = [f"{kind} {name}" for name, kind in found.items()]
    return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _why_not_fork(requested: str, method: str, reasons: list[str]) -> str:
    if requested != "auto" or not reasons:
        return ""
    return f" start_method='auto' chose {method!r}, not 'fork', because {'; '.join(reasons)}."


def check_workers_can_start(
    method: str,
    dataset: Any,
    transforms: Iterable[Callable[..., Any]],
    collate_fn: Callable[..., Any],
    *,
    requested: str = "auto",
    reasons: list[str] | None = None,
) -> None:
    """Fail now, in the main process, if workers started with ``method`` could not start.

    Nothing to check for ``"fork"``. For ``"forkserver"`` and ``"spawn"`` see the module docstring.

    Args:
        method: the start method the workers will use.
        dataset, transforms, collate_fn: what every worker receives.
        requested: the ``start_method`` the user passed (``"auto"`` adds why it did not fork).
        reasons: :func:`fork_blockers` at the time ``"auto"`` was resolved.

    Raises:
        TypeError: a class or function the workers need lives in a ``__main__`` they cannot
            import, or the objects cannot be pickled.
        RuntimeError: the main script cannot be re-run by workers (standard input) or would start
            workers again (no ``if __name__ == "__main__":`` guard).
    """
    if method == "fork":
        return
    transforms = list(transforms)
    why = _why_not_fork(requested, method, reasons or [])
    fork_fix = "pass start_method='fork' (workers are then copies of this process and import nothing)"
    main = _Main()
    if main.broken:
        raise RuntimeError(
            f"DataLoader workers started with {method!r} re-run the main module, but __main__ here is "
            f"{main.what}, which a new process cannot re-run. Save the code to a file and run that file, "
            f"or {fork_fix}.{why}"
        )
    if main.rerun:
        tree = main.tree()
        line = _unguarded_start_line(main, tree)
        if line is not None:
            raise RuntimeError(
                f"DataLoader workers started with {method!r} re-run the main script {main.path} to import "
                f"it, and this script starts them from its top-level code (line {line}) without an "
                '`if __name__ == "__main__":` guard: every worker would start the loader again. Put the '
                'code that runs the loader under the guard (def main(): ...  if __name__ == "__main__": '
                f"main()), or {fork_fix}.{why}"
            )
        found = _shallow_main_references([dataset, *transforms, collate_fn])
        hidden = _guard_only_names(tree) if tree is not None and found else {}
        guarded = {name: kind for name, kind in found.items() if name.split(".")[0] in hidden}
        if guarded:
            first = next(iter(guarded)).split(".")[0]
            raise TypeError(
                f"DataLoader workers started with {method!r} cannot find {_describe(guarded)}: it is defined "
                f'under `if __name__ == "__main__":` in {main.path} (line {hidden[first]}), a block that '
                "workers skip when they re-run the script. Define it at module level, above the guard, or "
                f"in a module that you import, or {fork_fix}.{why}"
            )
        return
    # __main__ cannot be imported by the workers: nothing may be pickled by reference to it.
    finder = _MainReferenceFinder()
    error: BaseException | None = None
    try:
        finder.dump((dataset, transforms, collate_fn))
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        error = exc
    except Exception:  # e.g. objects that pickle only while a process is being spawned: start decides
        pass
    if finder.found:
        raise TypeError(
            f"DataLoader workers started with {method!r} cannot import {_describe(finder.found)}: defined "
            f"in __main__, which here is {main.what}, and a new process cannot import that. Move it into "
            "a module file (e.g. my_datasets.py beside the notebook or script) and import it from there, "
            f"or {fork_fix}.{why}"
        ) from error
    if error is not None:
        raise TypeError(
            f"the dataset, transforms and collate_fn must be picklable to reach worker processes started "
            f"with {method!r} ({error}); define their classes and functions at module level (no lambdas or "
            f"local functions), or {fork_fix}, or use num_workers=0.{why}"
        ) from error


# -- the worker side: a re-entry while the worker starts ----------------------------------------------------
def exit_if_bootstrapping() -> None:
    """In a process still re-creating ``__main__`` (a starting worker), explain and exit.

    A worker started with forkserver/spawn re-runs the main script; a script without an
    ``if __name__ == "__main__":`` guard then reaches its loader again. Starting workers from there
    would recurse (or fail inside multiprocessing with "worker exited with code 1" in the main
    process); this exits with :data:`EXIT_MAIN_REENTERED` instead, which the main process explains.
    """
    if not getattr(multiprocessing.current_process(), "_inheriting", False):
        return
    main = sys.modules.get("__mp_main__") or sys.modules.get("__main__")  # the one being re-run
    where = getattr(main, "__file__", None) or "the main module"
    message = (
        f"\ndelira.data: this process (pid {os.getpid()}) is a DataLoader worker that is still starting: it "
        f"re-ran {where} to import it, and that code started a DataLoader's workers again, because it is "
        'not under an `if __name__ == "__main__":` guard. Put the code that runs the loader under the '
        "guard, or pass start_method='fork'.\n"
    )
    try:
        sys.stderr.write(message)
        sys.stderr.flush()
    except Exception:  # pragma: no cover - no usable stderr
        pass
    os._exit(EXIT_MAIN_REENTERED)  # SystemExit would be turned into exit status 1 by the fork server
