"""A teacher endpoint row → the trainer's TeacherSpec (the key decrypted only here)."""

from __future__ import annotations

from trainer.teacher import TeacherSpec
from webapp.teachers import crypto, ssrf
from webapp.teachers.models import TeacherEndpoint


def teacher_spec(
    endpoint: TeacherEndpoint, timeout: float = 120.0, role: str = "teacher", **sampling
) -> TeacherSpec:
    """``sampling`` overrides the endpoint's stored parameters (e.g. max_tokens=8);
    ``role`` is what the endpoint is in error messages ("teacher" or "judge").

    Checks the base URL against the SSRF rules again (raises ssrf.UnsafeURL): DNS may
    have changed since the endpoint was saved.
    """
    ssrf.check_base_url(endpoint.base_url)
    return TeacherSpec(
        base_url=endpoint.base_url,
        model=endpoint.model,
        api_key=crypto.decrypt(endpoint.api_key_encrypted) if endpoint.has_key else "",
        sampling=endpoint.sampling(**sampling),
        timeout=timeout,
        api_key_name=f"the API key of endpoint {endpoint.name!r}",
        role=role,
    )
