"""The web app and JSON API over a store: ``lookalike serve``.

Needs the ``serve`` extra (FastAPI, uvicorn, python-multipart). Nothing here imports them
at module level, so ``lookalike --help`` stays fast and a missing extra is one clear error
(``require_extra``) instead of an ImportError deep in a traceback.

    store = lookalike.open_store("photos")
    app = create_app(store)                    # an ASGI app: the page, the API, /openapi.json
    with BackgroundServer(app) as server:      # on 127.0.0.1, a free port, in a thread
        print(server.url)
"""

from __future__ import annotations

import importlib

from ..errors import MissingDependencyError

INSTALL = "pip install 'lookalike[serve]'"
# package -> the modules that provide it (python-multipart before 0.0.13 was only `multipart`)
_PACKAGES = {"FastAPI": ("fastapi",), "uvicorn": ("uvicorn",), "python-multipart": ("python_multipart", "multipart")}

__all__ = ["INSTALL", "BackgroundServer", "Server", "create_app", "require_extra"]


def require_extra() -> None:
    """Check that the ``serve`` extra is installed.

    Raises:
        MissingDependencyError: naming the missing package and the command that installs it.
    """
    for package, modules in _PACKAGES.items():
        if not any(_importable(module) for module in modules):
            raise MissingDependencyError(f"`lookalike serve` needs {package}, part of the serve extra: {INSTALL}")


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def __getattr__(name: str):
    if name == "create_app":
        from .app import create_app

        return create_app
    if name in ("Server", "BackgroundServer"):
        from . import server

        return getattr(server, name)
    raise AttributeError(f"module 'lookalike.serve' has no attribute {name!r}")
