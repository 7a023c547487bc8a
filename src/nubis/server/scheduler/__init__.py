"""Pure scheduling policies: snapshots and ``now`` in, decisions as data out; no I/O, no sleeps.

``autoscaling``: how many replicas a deployment wants. ``replicas``: the replica transition table,
restart backoff, crash-loop detection and a deployment's status from its replicas'.
"""
