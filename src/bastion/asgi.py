"""The ASGI applications the listeners' worker processes build.

``bastion serve`` names these factories to its servers by import string
(``bastion.asgi:public_app`` …), each worker calls its factory once, with
settings from the environment. They live here, above ``bastion.app`` and
``bastion.network``, so neither of those imports the other to build a
listener's app.

Each is built through ``bastion.network.startup.guarded``: a factory or a
lifespan start-up that raises ends the worker with a one-line cause for
``bastion serve`` to print, not a traceback per worker.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys
from collections.abc import Callable

from fastapi import FastAPI
from starlette.types import ASGIApp

from bastion.app import create_app
from bastion.logging import configure_server_logging
from bastion.network.listener import AdminListener, admin_mode
from bastion.network.startup import guarded
from bastion.network.tls import RedirectApp
from bastion.settings import load_settings

# `bastion serve --app module:factory` serves your app (built with create_app
# and your routes) instead of the stock one; workers learn it from here.
APP_ENV = "BASTION_APP"


def load_target(target: str) -> Callable[[], object]:
    """The factory named by ``module:function``, looked up from the working
    directory as well, like ``uvicorn module:app``."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module, _, name = target.partition(":")
    factory = getattr(importlib.import_module(module), name or "app_factory")
    if not callable(factory):
        raise TypeError(f"{target} is not a factory function")
    return factory  # type: ignore[no-any-return]


def public_app() -> ASGIApp:
    """The public listener's application: the stock app, or the one ``BASTION_APP`` names."""
    return guarded(_public_app)


def admin_app() -> ASGIApp:
    """The admin listener's application: the same app, marked as the admin plane."""

    def build() -> ASGIApp:
        settings = load_settings()
        return AdminListener(_public_app(), client_cert_verified=admin_mode(settings) == "mtls")

    return guarded(build)


def redirect_app() -> ASGIApp:
    """The redirect listener's application: HTTP to HTTPS, nothing else."""
    return guarded(lambda: RedirectApp(load_settings().auth.public_url))


def _public_app() -> FastAPI:
    settings = load_settings()
    configure_server_logging(settings)
    target = os.environ.get(APP_ENV)
    app = load_target(target)() if target else create_app(settings)
    if not isinstance(app, FastAPI):
        raise TypeError(f"{target} did not return a FastAPI app built with bastion.create_app")
    # What the worker has loaded lives as long as the process: out of the
    # collector's sight, a full collection scans only request garbage (a
    # pass over the whole heap took ~60 ms, the p99 of a read). Only here,
    # in the server's worker: an embedding process or a test suite keeps
    # its own collector untouched. `bastion serve` loads the application with
    # the collector off; it runs from here on.
    gc.collect()
    gc.freeze()
    gc.enable()
    return app
