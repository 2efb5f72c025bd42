"""Talking to the Kubernetes API without a client library: a minimal HTTP/1.1
client over asyncio (``http.py``), the service-account credentials
(``credentials.py``) and the pure reading of API objects into peer addresses
(``objects.py``). Used by :class:`skycluster.strategy.kubernetes.Kubernetes`."""
