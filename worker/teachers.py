"""Teacher endpoint tasks: "Test connection" asks the teacher one short question, and
finds the model's dialect (its token parameter, whether it takes a temperature, the
reasoning it spends).

The task re-checks the base URL against the SSRF rules right before connecting (DNS
may have changed since the endpoint was saved), builds the spec with the decrypted
key through ``webapp.teachers.specs`` as the collection pipeline does, and calls the teacher
through ``trainer.teacher.ask`` like every other teacher call, so its errors carry the
same kinds: transient (try again), prompt (this request refused), run (the endpoint
is unusable as configured).
"""

from __future__ import annotations

import asyncio
import logging

from celery.exceptions import SoftTimeLimitExceeded

from trainer.teacher import Answer, RetryPolicy, TeacherError, TeacherSpec, discover
from webapp.celery import app
from webapp.lib import crypto
from webapp.teachers import actions, ssrf
from webapp.teachers.models import (
    ConnectionStatus,
    ErrorKind,
    TeacherEndpoint,
    TemperatureMode,
    TokenParam,
)
from webapp.teachers.specs import teacher_spec
from worker.paid import without_key

log = logging.getLogger(__name__)

TEST_MESSAGES = [{"role": "user", "content": "Reply with the single word OK."}]
# A realistic budget: a reasoning model spends hundreds of hidden tokens before it writes
# (8 tokens came back empty, finish_reason "length").
TEST_MAX_TOKENS = 1024
# Well inside the task's soft limit (60 s), so a slow teacher is reported as such.
TEST_TIMEOUT_S = 30.0
# Few attempts and short waits: the person waiting wants an answer soon. A 429 is waited
# out once (up to 10 s: the shared limit holds every worker meanwhile), not reported as
# a failed test of a key that works.
TEST_RETRY = RetryPolicy(max_attempts=2, base_delay=0.5, max_delay=10.0)


@app.task(name=actions.TEST_TASK, soft_time_limit=60, time_limit=90, acks_late=True)
def run_teacher_test(endpoint_id: int) -> str:
    """Test one endpoint; write ok + latency or the typed error onto its row."""
    endpoint = TeacherEndpoint.objects.filter(pk=endpoint_id).first()
    if endpoint is None or endpoint.test_status != ConnectionStatus.PENDING:
        return "skipped"  # deleted, edited since, or already answered (a redelivery)
    spec = None
    try:
        # teacher_spec checks the URL again: DNS may have changed since it was saved.
        spec = teacher_spec(endpoint, timeout=TEST_TIMEOUT_S, max_tokens=TEST_MAX_TOKENS)
        spec, answer = asyncio.run(_discover(endpoint, spec))
    except (ssrf.UnsafeURL, crypto.KeyUnreadable) as exc:
        return _failed(endpoint, ErrorKind.RUN, str(exc), spec)
    except TeacherError as exc:
        return _failed(endpoint, exc.scope, str(exc), spec)
    except SoftTimeLimitExceeded:
        return _failed(
            endpoint, ErrorKind.TRANSIENT, "the test took longer than 60 s; try again", spec
        )
    except Exception as exc:
        # Not left pending for the page to poll forever; the type only, as the message
        # of an unknown error might quote anything. The traceback goes to the worker log.
        _failed(
            endpoint,
            ErrorKind.TRANSIENT,
            f"internal error in the worker ({type(exc).__name__}); see the worker log",
            spec,
        )
        raise
    latency_ms = max(1, round(answer.latency_s * 1000))
    found = {
        "found_token_param": spec.dialect.token_param,
        "found_temperature_fixed": not spec.dialect.send_temperature
        and endpoint.temperature_mode == TemperatureMode.AUTO,
        "found_reasoning_tokens": answer.reasoning_tokens or None,
    }
    actions.record_test_ok(endpoint.pk, latency_ms, **found)
    log.info("teacher %s (%s): test ok in %d ms", endpoint.pk, endpoint.model, latency_ms)
    return "ok"


async def _discover(endpoint: TeacherEndpoint, spec: TeacherSpec) -> tuple[TeacherSpec, Answer]:
    """The endpoint's dialect, where its settings are "auto" (trainer.teacher.discover)."""
    return await discover(
        spec,
        TEST_MESSAGES,
        token_auto=endpoint.token_param == TokenParam.AUTO,
        temperature_auto=endpoint.temperature_mode == TemperatureMode.AUTO,
        retry=TEST_RETRY,
    )


def _failed(endpoint: TeacherEndpoint, kind: str, message: str, spec: TeacherSpec | None) -> str:
    message = without_key(message, endpoint, spec)
    actions.record_test_error(endpoint.pk, kind, message)
    log.info("teacher %s (%s): test failed (%s): %s", endpoint.pk, endpoint.model, kind, message)
    return "error"
