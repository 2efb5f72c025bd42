"""The credentials every pod gets: ``token``, ``ca.crt`` and ``namespace`` in the
service-account directory. The token is read again for every request, so a
rotated (projected, hourly) token is used as soon as the kubelet writes it."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

from skycluster.errors import ConfigError

DEFAULT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
MAX_TOKEN = 64 * 1024


class ServiceAccount:
    def __init__(self, path: str | Path = DEFAULT_PATH) -> None:
        self.path = Path(path)

    @property
    def token_file(self) -> Path:
        return self.path / "token"

    @property
    def ca_file(self) -> Path:
        return self.path / "ca.crt"

    def token(self) -> str | None:
        """The current token, or None when there is none (e.g. a local proxy)."""
        try:
            with self.token_file.open("rb") as handle:
                raw = handle.read(MAX_TOKEN + 1)
        except OSError:
            return None
        if len(raw) > MAX_TOKEN:
            return None
        token = raw.decode("ascii", errors="replace").strip()
        return token if token and token.isprintable() else None

    def namespace(self) -> str | None:
        try:
            text = (self.path / "namespace").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
        return text.strip() or None

    def ssl_context(self, *, insecure: bool, log: logging.Logger) -> ssl.SSLContext:
        """A context that verifies the API server against ``ca.crt`` (and its name
        or IP); ``insecure`` turns verification off, loudly."""
        if insecure:
            log.warning(
                "TLS VERIFICATION OF THE KUBERNETES API IS OFF (insecure_skip_tls_verify): "
                "anyone on the path can impersonate the API server and choose this "
                "node's peers; use it only for a throwaway test cluster"
            )
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        try:
            return ssl.create_default_context(cafile=str(self.ca_file))
        except (OSError, ssl.SSLError) as exc:
            why = getattr(exc, "strerror", None) or str(exc)
            raise ConfigError(
                f"cannot load the Kubernetes API CA {self.ca_file}: {why}; mount the service "
                "account (automountServiceAccountToken: true) or point "
                "--kubernetes-service-account-path at a directory with ca.crt"
            ) from None
