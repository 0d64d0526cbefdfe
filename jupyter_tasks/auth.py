"""The kernel credential: a per-start secret that opens the ``/tasks`` routes and nothing else.

Kernels inherit the server's environment, and environment variables end up in
subprocesses, printed outputs and shared notebooks.  So kernels get a token of
their own (``JUPYTER_TASKS_TOKEN``) instead of the server's: it is fresh on
every server start and only the tasks handlers know it.

It is implemented as a thin wrapper around the server's identity provider,
installed on the tasks handlers only.  Requests that carry the kernel token in
their ``Authorization`` header are identified as ``KERNEL_USER``; everything
else is handed to the server's own identity provider unchanged, so cookies,
the server token, passwords and JupyterHub keep working as configured.  The
kernel user still goes through the server's ``Authorizer`` like any other user
(an authorizer may recognise it by ``username == KERNEL_USERNAME``).
"""

from __future__ import annotations

import hmac
import re
import secrets
from typing import Any

from jupyter_server.auth import IdentityProvider, User
from tornado.web import RequestHandler

KERNEL_USERNAME = "jupyter-tasks-kernel"

#: Same header forms as Jupyter Server's own tokens: ``token <t>`` or ``bearer <t>``.
_AUTH_HEADER = re.compile(r"(?:token|bearer)\s+(\S+)\s*$", re.IGNORECASE)

#: Attribute set on a handler authenticated with the kernel token.
_KERNEL_FLAG = "_jupyter_tasks_kernel_authenticated"


def new_kernel_token() -> str:
    """A fresh random secret (256 bits) for one server start."""
    return secrets.token_urlsafe(32)


def kernel_user() -> User:
    """The identity of requests made with the kernel token."""
    return User(
        username=KERNEL_USERNAME, name="Kernel (jupyter-tasks)", display_name="Kernel", initials="K"
    )


def header_token(handler: RequestHandler) -> str | None:
    """The token of an ``Authorization: token <t>`` (or ``bearer``) header, if any.

    Only the header counts: a URL query is logged by proxies and servers.
    """
    match = _AUTH_HEADER.match(handler.request.headers.get("Authorization", ""))
    return match.group(1) if match else None


class KernelTokenIdentityProvider:
    """The server's identity provider, plus the kernel token, for the tasks handlers only.

    Not a subclass: it wraps whatever provider the server runs (the default,
    a password provider, JupyterHub's) and forwards every other attribute.
    """

    def __init__(self, inner: IdentityProvider, token: str) -> None:
        self._inner = inner
        self._token = token.encode("utf-8")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def matches(self, handler: RequestHandler) -> bool:
        """True when the request carries the kernel token (constant-time compare)."""
        given = header_token(handler)
        if given is None:
            return False
        return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), self._token)

    def get_user(self, handler: RequestHandler) -> Any:
        """The kernel user for the kernel token; else whatever the server's provider says."""
        if self.matches(handler):
            setattr(handler, _KERNEL_FLAG, True)
            return kernel_user()
        return self._inner.get_user(handler)

    def is_token_authenticated(self, handler: RequestHandler) -> bool:
        """Kernel-token requests count as token requests: no XSRF, no origin check.

        A browser cannot attach an ``Authorization`` header to a cross-site
        request, which is why Jupyter Server skips XSRF for token requests.
        """
        if getattr(handler, _KERNEL_FLAG, False):
            return True
        return bool(self._inner.is_token_authenticated(handler))

    def should_check_origin(self, handler: RequestHandler) -> bool:
        """No origin check for the kernel token; the server's rule for everything else."""
        if getattr(handler, _KERNEL_FLAG, False):
            return False
        return bool(self._inner.should_check_origin(handler))


def is_kernel_request(handler: RequestHandler) -> bool:
    """Whether this request was authenticated with the kernel token."""
    return bool(getattr(handler, _KERNEL_FLAG, False))
