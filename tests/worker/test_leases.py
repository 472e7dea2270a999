"""GPU leases in the database: who holds which GPU of a node, and who may give it back."""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.utils import timezone

from tests.webapp.factories import make_job
from webapp.nodes import actions as leases
from webapp.nodes.models import GpuLease
from webapp.teams.actions import create_team


def test_a_worker_that_lost_its_lease_cannot_release_its_successors(db):
    owner = get_user_model().objects.create_user("owner", password="x")
    job = make_job(create_team("Lab", "lab", owner=owner), status="training", gpus=1)
    first = leases.acquire(job, [0], 1)
    assert [lease.gpu_index for lease in first] == [0]
    assert leases.acquire(job, [0], 1) is None  # held
    # The first worker stalls: its lease expires, and the job's next worker leases GPU 0.
    GpuLease.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    second = leases.acquire(job, [0], 1)
    assert second is not None
    leases.release(first)  # the stalled worker wakes up and cleans up
    assert list(GpuLease.objects.values_list("pk", flat=True)) == [second[0].pk]
    leases.release(second)
    assert not GpuLease.objects.exists()
