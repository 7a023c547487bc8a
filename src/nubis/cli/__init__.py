"""The ``nubis`` command line: thin over the SDK; colours and tables live in render.py."""
