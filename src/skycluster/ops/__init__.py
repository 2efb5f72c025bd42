"""Operating a cluster: metrics, health endpoints, the membership view, the live page.

* :mod:`skycluster.ops.http11`: a sans-I/O HTTP/1.1 request parser with strict limits.
* :mod:`skycluster.ops.server`: the HTTP endpoint, on the node's own event loop.
* :mod:`skycluster.ops.status`: the membership view (``/status``, ``skycluster members``).
* :mod:`skycluster.ops.remote`: link frames that ask a peer for its view.
* :mod:`skycluster.ops.prometheus`: Prometheus exposition (``pip install skycluster[metrics]``).
* :mod:`skycluster.ops.service`: wires it all to a node.
"""
