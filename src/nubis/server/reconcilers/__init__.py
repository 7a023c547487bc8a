"""Background loops that converge actual state to the intent recorded by requests."""
