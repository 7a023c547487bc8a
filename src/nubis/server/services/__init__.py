"""Business rules of each resource; the only code that touches rows."""
