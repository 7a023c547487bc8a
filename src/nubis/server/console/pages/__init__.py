"""One module per page group, each with an APIRouter named ``router`` whose routes use
:class:`~nubis.server.console.responses.ConsoleRoute`; ``console.mount`` includes every module here."""
