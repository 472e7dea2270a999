"""The one door to the Hugging Face Hub, for the web: how large a hub model is before a
job or an evaluation may start from it, and its config.json for the memory planner.

A hub id downloads in full into the shared model cache of every node that runs it, so a
site bounds it like any storage: ``look_up`` reads the repository's files and sizes
(``HfApi.model_info(files_metadata=True)``: ``GET {endpoint}/api/models/{id}?blobs=true``)
and the launch refuses one past the team's cap, or past its storage, naming the figure.
Every failure of the Hub becomes a ``HubError`` with the message for the person.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

# What a student needs of a repository: its weights, config and tokenizer (the worker
# downloads these; a repository's other files, e.g. other formats, are never fetched).
MODEL_FILES = ("*.safetensors", "*.json", "*.model", "*.txt", "*.jinja", "*.tiktoken")


class HubError(Exception):
    """The Hub refused or could not answer; the message says what to do."""


@dataclass(frozen=True)
class HubModel:
    repo_id: str
    revision: str  # the commit the sizes are of
    size_bytes: int  # of the files a student downloads (MODEL_FILES)
    config: dict[str, Any] | None  # its config.json, when it has one


def _api():
    from huggingface_hub import HfApi

    return HfApi(endpoint=settings.GAD_HUB_ENDPOINT)


def look_up(repo_id: str) -> HubModel:
    """The repository's commit, the size of its model files and its config.json."""
    from fnmatch import fnmatch

    from huggingface_hub import errors

    try:
        info = _api().model_info(repo_id, files_metadata=True, timeout=20)
    except errors.GatedRepoError:
        raise HubError(_gated(repo_id)) from None
    except (errors.RepositoryNotFoundError, errors.RevisionNotFoundError):
        raise HubError(f"{repo_id!r} is not a model on the Hugging Face Hub.") from None
    except errors.OfflineModeIsEnabled:
        raise HubError(_OFFLINE) from None
    except (errors.HfHubHTTPError, OSError, ValueError) as failed:
        raise HubError(
            f"the Hugging Face Hub did not answer for {repo_id!r} ({type(failed).__name__}); "
            "try again, or use a registered model (model:NAME)."
        ) from None
    size = sum(
        sibling.size or 0
        for sibling in info.siblings or []
        if any(fnmatch(sibling.rfilename, pattern) for pattern in MODEL_FILES)
    )
    return HubModel(repo_id, info.sha or "main", size, _config(repo_id, info.sha))


def _config(repo_id: str, revision: str | None) -> dict[str, Any] | None:
    """The repository's config.json (one small file, read from a temporary directory:
    the web keeps no model cache), or None."""
    from huggingface_hub import errors, hf_hub_download

    with tempfile.TemporaryDirectory() as scratch:
        try:
            path = hf_hub_download(
                repo_id,
                "config.json",
                revision=revision,
                local_dir=scratch,
                endpoint=settings.GAD_HUB_ENDPOINT,
            )
            return json.loads(Path(path).read_text())
        except errors.GatedRepoError:
            # Its files are not the site's to download (a gated model's terms).
            raise HubError(_gated(repo_id)) from None
        except (errors.HfHubHTTPError, errors.OfflineModeIsEnabled, OSError, ValueError):
            return None


def _gated(repo_id: str) -> str:
    return (
        f"{repo_id!r} is gated on the Hugging Face Hub: its files are not this site's to "
        "download; register it as a model (model:NAME) once an administrator has."
    )


_OFFLINE = (
    "this site does not reach the Hugging Face Hub: use a model an administrator registered "
    "(model:NAME) or one of the team's checkpoints (checkpoint:ID)."
)
