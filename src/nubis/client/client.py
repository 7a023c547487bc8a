"""``nubis.Client``: one object per resource over the control plane's REST API."""

from __future__ import annotations

from nubis.client.alerts import AlertsAPI
from nubis.client.base import Transport
from nubis.client.config import resolve
from nubis.client.console import ConsoleAPI
from nubis.client.deployments import DeploymentsAPI
from nubis.client.jobs import JobsAPI
from nubis.client.llm import LLMAPI
from nubis.client.models import ModelsAPI
from nubis.client.nodes import NodesAPI
from nubis.client.photons import PhotonsAPI
from nubis.client.secrets import SecretsAPI
from nubis.client.storage import StorageAPI
from nubis.client.tokens import AuditAPI, TokensAPI
from nubis.client.usage import UsageAPI
from nubis.client.workspaces import WorkspacesAPI
from nubis.models.auth import WhoAmI


class Client:
    """``Client()`` finds URL and token from env or ``$NUBIS_HOME``; or pass them."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        workspace: str | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.credentials = resolve(url, token, workspace)
        self._transport = Transport(self.credentials, timeout=timeout)
        self.workspaces = WorkspacesAPI(self._transport)
        self.tokens = TokensAPI(self._transport)
        self.audit = AuditAPI(self._transport)
        self.secrets = SecretsAPI(self._transport)
        self.photons = PhotonsAPI(self._transport)
        self.storage = StorageAPI(self._transport)
        self.deployments = DeploymentsAPI(self._transport)
        self.jobs = JobsAPI(self._transport)
        self.models = ModelsAPI(self._transport)
        self.llm = LLMAPI(self._transport)
        self.nodes = NodesAPI(self._transport)
        self.usage = UsageAPI(self._transport)
        self.alerts = AlertsAPI(self._transport)
        self.console = ConsoleAPI(self._transport)

    @property
    def url(self) -> str:
        return self.credentials.url

    def whoami(self) -> WhoAmI:
        return self.tokens.whoami()

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
