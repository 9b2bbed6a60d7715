"""The shared runtime kit: how this project's own servers listen and speak HTTP.

Its job is the part of a server that has nothing to do with what the server is for, done
once so that every server gets the same hardening:

* :mod:`.listen`: opening a listener (Unix socket with its mode and stale-file handling,
  loopback TCP, vsock) from an :class:`attested.net.Address`;
* :mod:`.http`: one HTTP/1.1 server (a thread per connection, caps, deadlines, refusals
  the client can read, graceful stop) serving a plain ``Request -> Response`` callable;
* :mod:`.request`: reading one request for it (strict framing checks, then h11);
* :mod:`.lifecycle`: the one start / stop(deadline) / running / listeners protocol of
  every long-running part, and one parallel stop.
* :mod:`.config`: the one configuration reader (a bounded TOML or JSON document,
  ``ATTESTED_*`` overrides, typed getters, every problem at once in one ``ConfigError``).

Boundaries: no application logic here (routes, JSON schemas, KMS, SigV4 and error codes
belong to the callers, which plug in their own error body); standard library and h11
only; nothing here imports the development-only packages (``attested.emulator``,
``attested.simulator``), so production code may use it. Private: import from the
modules; the API may change with its callers (``attested.service``, ``attested.emulator``,
``attested.relay``).
"""
