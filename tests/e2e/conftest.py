"""Fixtures the end-to-end modules share: a module's own `nubis up` on embedded defaults and an
admin client of it (a module that needs other options defines its own ``platform``)."""

from platform_process import module_client, module_platform  # noqa: F401 - the fixtures platform, client
