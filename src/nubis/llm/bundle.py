"""The photon folder an LLM deployment runs: ``write_llm_photon(dest, name=..., ...)``.

The control plane builds it in a subprocess (building imports the photon, and the photon imports
the engines; the control plane never imports torch). The folder holds a short ``photon.py`` whose
class subclasses :class:`nubis.llm.photon.LLM` — configured by the deployment's env
(``NUBIS_LLM_MODEL``, ``NUBIS_LLM_ENGINE``, ``NUBIS_LLM_NAME``, ``NUBIS_LLM_OPTIONS``) — and, for a
storage or registry source, the weights under ``model/``. ``NUBIS_LLM_MODEL`` names those by their
path inside the bundle; the photon module makes it absolute when the replica imports it.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from nubis.llm.photon import LLM

_NAME = re.compile(r"^[a-z0-9][a-z0-9\-]{0,62}$")

PHOTON_TEMPLATE = '''"""Serves {source} with the OpenAI API (nubis.llm.photon); by `nubis llm deploy`."""

import os
from pathlib import Path

from nubis.llm.photon import LLM as OpenAIPhoton

HERE = Path(__file__).resolve().parent


def _inherited(name):
    return next(vars(k)[name] for k in OpenAIPhoton.__mro__ if name in vars(k))


def _model_in_bundle():
    """NUBIS_LLM_MODEL as a path inside this bundle (model/...) → its absolute path here."""
    model = os.environ.get("NUBIS_LLM_MODEL", "")
    if (model == "model" or model.startswith("model/")) and (HERE / model).exists():
        os.environ["NUBIS_LLM_MODEL"] = str(HERE / model)


_model_in_bundle()


class LLM(OpenAIPhoton):
    name = {name!r}
    requirements = {requirements!r}

    # nubis.llm.photon.LLM's handlers, named here: the platform checks a pushed bundle's handlers
    # by reading its source (never importing it)
{handlers}
'''


def render_photon(*, name: str, source: str, requirements: list[str]) -> str:
    handlers = "\n".join(f"    {h.name} = _inherited({h.name!r})" for h in LLM.handler_infos())
    return PHOTON_TEMPLATE.format(name=name, source=source, requirements=requirements,
                                  handlers=handlers or "    pass")


def write_llm_photon(dest: Path, *, name: str, source: str, requirements: list[str],
                     model: Path | None = None) -> Path:
    """Write the photon folder at ``dest`` (written aside, then renamed); ``model`` (a file or a
    folder) is moved to ``dest/model/`` (a file keeps its name: ``model/<name>``)."""
    if not _NAME.match(name):
        raise ValueError(f"photon name {name!r}: use lower-case letters, digits and '-' (at most 63)")
    dest = Path(dest)
    if dest.exists():
        raise FileExistsError(f"{dest} already exists")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.tmp-"))
    try:
        tmp.chmod(0o755)
        if model is not None and model.is_dir():
            shutil.move(str(model), tmp / "model")
        elif model is not None:
            (tmp / "model").mkdir()
            shutil.move(str(model), tmp / "model" / model.name)
        (tmp / "photon.py").write_text(render_photon(name=name, source=source, requirements=requirements))
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest
