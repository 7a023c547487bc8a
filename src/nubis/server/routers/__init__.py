"""Thin HTTP routers: resolve the caller, call one service function, return a wire model."""
