"""The gateway: the data-plane proxy in front of deployments' replicas (see docs/gateway.md)."""
