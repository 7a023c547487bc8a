"""The photon SDK and its serving runtime."""
