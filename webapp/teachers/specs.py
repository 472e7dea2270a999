"""A teacher endpoint row → the trainer's TeacherSpec (the key decrypted only here)."""

from __future__ import annotations

from trainer.teacher import TeacherSpec
from webapp.lib import crypto
from webapp.teachers import ssrf
from webapp.teachers.models import TeacherEndpoint


def teacher_spec(
    endpoint: TeacherEndpoint,
    timeout: float = 120.0,
    role: str = "teacher",
    **sampling,
) -> TeacherSpec:
    """``sampling`` overrides the endpoint's stored parameters (e.g. max_tokens=1024);
    ``role`` is what the endpoint is in error messages ("teacher" or "judge"). The
    dialect is the endpoint's own (its settings and what its last test found).

    Checks the base URL against the SSRF rules again (raises ssrf.UnsafeURL): DNS may
    have changed since the endpoint was saved; the calls then go to the address checked.
    """
    _, address = ssrf.resolve_base_url(endpoint.base_url)
    return TeacherSpec(
        base_url=endpoint.base_url,
        model=endpoint.model,
        # Only to the scheme, host and port the key was entered for (a URL changed behind
        # the actions' back, e.g. in the database, gets no key).
        api_key=crypto.decrypt(endpoint.api_key_encrypted) if endpoint.key_goes_here else "",
        sampling=endpoint.sampling(**sampling),
        dialect=endpoint.dialect(),
        limits=endpoint.limits(),  # one limit for every worker that calls it
        timeout=timeout,
        api_key_name=f"the API key of endpoint {endpoint.name!r}",
        role=role,
        connect_to=address,  # the address just checked, whatever DNS says later
        scope=endpoint.answer_scope,  # the team's own answers (and its key's)
    )
