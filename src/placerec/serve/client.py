"""The OpenSearch client, configured from settings (and so from the ``opensearch_default`` connection)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from placerec.settings import Settings, get_settings

if TYPE_CHECKING:
    from opensearchpy import OpenSearch


def opensearch_client(settings: Settings | None = None, **overrides: Any) -> OpenSearch:
    """A client for ``settings.opensearch_url``: basic auth and TLS (verified against ``ca_certs``) when set.

    The password goes to the client only; it is not part of any message this module logs or raises.
    """
    from opensearchpy import OpenSearch

    s = settings or get_settings()
    options: dict[str, Any] = {
        "hosts": [s.opensearch_url],
        "timeout": s.opensearch_timeout_s,
        "http_compress": False,
    }
    if s.opensearch_user:
        options["http_auth"] = (s.opensearch_user, s.opensearch_password)
    if s.opensearch_url.startswith("https://"):
        options.update(use_ssl=True, verify_certs=s.opensearch_verify_certs, ssl_show_warn=s.opensearch_verify_certs)
        if s.opensearch_ca_certs:
            options["ca_certs"] = s.opensearch_ca_certs
    options.update(overrides)
    return OpenSearch(**options)
