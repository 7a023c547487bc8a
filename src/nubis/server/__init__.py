"""The control plane: FastAPI app, database, services and (later) reconcilers."""
