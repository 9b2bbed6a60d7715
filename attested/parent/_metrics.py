"""The parent's metrics endpoint: Prometheus text on ``GET /metrics``, loopback by default.

It shows the counters the parts keep anyway: every relay listener's (connections, bytes,
log records, refusals and failures by reason, through the runtime kit's
:func:`~attested._runtime.metrics.register_relay_metrics`, the same code the service's
``/metrics`` uses) and the credential server's (served, refused). It serves nothing
else: no configuration, no credential, no log line. The enclave's own ``/metrics`` is
scraped through an ``[[ingress]]`` forward to the service's vsock listener (see
``docs/recipes/metrics.md``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Self

from attested._runtime.http import HttpLimits, HttpServer, Request, Response, json_error_page
from attested._runtime.lifecycle import Scoped
from attested._runtime.listen import open_listener
from attested._runtime.metrics import CONTENT_TYPE, ReadCounter, Registry, register_relay_metrics
from attested.errors import UnavailableError
from attested.net import Address

__all__ = ["MetricsEndpoint", "parent_registry"]

_LOG = logging.getLogger("attested.parent")


def parent_registry(
    relay_stats: Sequence[Callable[[], Any]],
    credentials: Callable[[], tuple[int, int]] | None = None,
) -> Registry:
    """The parent's metrics.

    Args:
        relay_stats: ``Relay.stats`` of every relay the parent runs.
        credentials: ``(served, refused)`` of the credential server, if it runs.
    """
    registry = Registry()
    register_relay_metrics(registry, relay_stats)

    def count(index: int) -> Callable[[], list[tuple[Sequence[str], float]]]:
        return lambda: [] if credentials is None else [((), float(credentials()[index]))]

    registry.register(
        ReadCounter(
            "attested_parent_credentials_served_total",
            "Credential requests answered by the parent's credential server.",
            count(0),
        )
    )
    registry.register(
        ReadCounter(
            "attested_parent_credentials_refused_total",
            "Connections to the credential server refused because of their peer.",
            count(1),
        )
    )
    return registry


class MetricsEndpoint(Scoped):
    """Serves a :class:`Registry` as ``GET /metrics`` on one listener.

    Args:
        listen: where to listen (``tcp:127.0.0.1:9101``).
        registry: what to render.
    """

    def __init__(self, listen: Address, registry: Registry) -> None:
        self._listen = listen
        self._registry = registry
        self._server: HttpServer | None = None

    def start(self) -> Self:
        """Bind and serve.

        Raises:
            UnavailableError: the address cannot be bound.
            RuntimeError: started before.
        """
        if self._server is not None:
            raise RuntimeError("a MetricsEndpoint can be started once")
        try:
            listener = open_listener(self._listen, socket_mode=0o660)
        except OSError as exc:
            raise UnavailableError(
                f"metrics: cannot listen on {self._listen}: {exc.strerror or exc}"
            ) from exc
        self._server = HttpServer(
            listener,
            self._serve,
            limits=HttpLimits(max_body=0, max_connections=16),
            methods=frozenset({"GET", "HEAD"}),
            server_name="attested-parent",
            name="attested-parent-metrics",
            logger=_LOG,
        )
        self._server.start()
        return self

    def stop(self, deadline: float = 10.0) -> bool:
        """Stop serving; safe twice and before :meth:`start`."""
        return True if self._server is None else self._server.stop(deadline)

    @property
    def running(self) -> bool:
        """Whether the endpoint serves."""
        return self._server is not None and not self._server.stopping

    @property
    def listeners(self) -> Mapping[str, Address]:
        """``{"metrics": bound address}``; empty before start."""
        if self._server is None:
            return MappingProxyType({})
        return MappingProxyType({"metrics": self._server.address})

    def _serve(self, request: Request) -> Response:
        path = request.path.partition("?")[0]
        if path != "/metrics":
            return json_error_page(404, "not_found", "only GET /metrics is served here")
        body = self._registry.render().encode()
        return Response(status=200, body=body, content_type=CONTENT_TYPE)
