"""A teacher endpoint row → the trainer's TeacherSpec (the key decrypted only here)."""

from __future__ import annotations

from trainer.teacher import Sampling, TeacherSpec
from webapp.teachers import crypto
from webapp.teachers.models import TeacherEndpoint
from webapp.teachers.params import RULES


def teacher_spec(endpoint: TeacherEndpoint, timeout: float = 120.0, **sampling) -> TeacherSpec:
    """``sampling`` overrides the endpoint's stored parameters (e.g. max_tokens=8)."""
    params = {name: endpoint.params.get(name) for name in RULES} | sampling
    return TeacherSpec(
        base_url=endpoint.base_url,
        model=endpoint.model,
        api_key=crypto.decrypt(endpoint.api_key_encrypted) if endpoint.has_key else "",
        sampling=Sampling(**params),
        timeout=timeout,
        api_key_name=f"the API key of teacher {endpoint.name!r}",
    )
