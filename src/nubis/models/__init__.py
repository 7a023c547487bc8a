"""Wire models shared by the photon runtime, the server, the SDK and the CLI."""

from nubis.models.photons import HandlerInfo, PhotonManifest
from nubis.models.resources import Resources

__all__ = ["HandlerInfo", "PhotonManifest", "Resources"]
