"""Operating a cluster: metrics, health endpoints, the membership view, the live page.

* :mod:`skycluster.ops.http11`: a sans-I/O HTTP/1.1 request parser with strict limits.
* :mod:`skycluster.ops.server`: the HTTP endpoint, on the node's own event loop.
* :mod:`skycluster.ops.status`: the membership view (``/status``, ``skycluster members``).
* :mod:`skycluster.ops.remote`: link frames that ask a peer for its view.
* :mod:`skycluster.ops.members`: the text table that ``skycluster members`` prints.
* :mod:`skycluster.ops.metrics`: counters and the RTT histogram, fed by telemetry events.
* :mod:`skycluster.ops.prometheus`: Prometheus exposition (``pip install skycluster[metrics]``).
* :mod:`skycluster.ops.logs`: log lines for operators (from telemetry) and the JSON formatter.
* :mod:`skycluster.ops.service`: wires it all to a node.
"""
