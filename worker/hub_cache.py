"""Hub models into the node's model cache, by the worker, before a trainer starts.

A single-node trainer runs with no network (``worker.sandbox``), so what it loads from
the Hugging Face Hub must be in the cache (``HF_HOME``) first. The worker downloads only
the files a model needs (``webapp.jobs.hub.MODEL_FILES``, the files whose size the
launch checked against the team's cap), with the site's own Hub token, which the
trainer never sees.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from webapp.jobs.hub import MODEL_FILES
from webapp.jobs.references import HUB_ID


class NotFetched(Exception):
    """The model could not be brought into the cache; the message says why."""


def fetch(repo_id: str) -> str:
    """The model's directory in the cache, downloaded first where it is not there."""
    from huggingface_hub import errors, snapshot_download

    if not HUB_ID.fullmatch(repo_id):
        raise NotFetched(f"{repo_id!r} is not a Hugging Face Hub model id.")
    try:
        return snapshot_download(
            repo_id, allow_patterns=list(MODEL_FILES), endpoint=settings.GAD_HUB_ENDPOINT
        )
    except errors.LocalEntryNotFoundError:
        raise NotFetched(
            f"{repo_id} is not in this node's model cache, and the node does not download "
            "from the Hugging Face Hub (HF_HUB_OFFLINE); put it in the cache (HF_HOME) or "
            "register it as a model (model:NAME)."
        ) from None
    except (errors.GatedRepoError, errors.RepositoryNotFoundError):
        raise NotFetched(
            f"{repo_id} cannot be downloaded from the Hugging Face Hub (missing, private or "
            "gated for this site's token)."
        ) from None
    except (errors.HfHubHTTPError, OSError) as failed:
        raise NotFetched(
            f"downloading {repo_id} from the Hugging Face Hub failed ({type(failed).__name__}: "
            f"{failed}); the job can be run again."
        ) from None


def readable(model: str) -> tuple[Path, ...]:
    """What a sandboxed trainer must be given to load ``model`` (a resolved student or
    evaluation model): its directory (a checkpoint, a registered model); nothing for a
    hub id, which is first brought into the model cache (bound read-only in every
    sandbox). Raises NotFetched."""
    path = Path(model)
    if path.is_absolute():
        return (path,)
    fetch(model)
    return ()
