"""nubis: a self-hostable AI cloud. The public face: photons, handlers, clients and errors."""

from nubis import errors
from nubis._version import __version__
from nubis.client.client import Client
from nubis.client.photon import AsyncPhotonClient, PhotonClient
from nubis.errors import NubisError
from nubis.models.resources import Resources
from nubis.photon.files import File
from nubis.photon.handler import handler
from nubis.photon.photon import Photon

__all__ = [
    "AsyncPhotonClient",
    "Client",
    "File",
    "NubisError",
    "Photon",
    "PhotonClient",
    "Resources",
    "__version__",
    "errors",
    "handler",
]
