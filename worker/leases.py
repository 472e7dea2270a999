"""GPU leases: a job asking for k GPUs gets k GPUs of this node that no other job holds."""

from __future__ import annotations

import socket
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from webapp.jobs.models import GpuLease, Job

LEASE_S = 30  # renewed with every heartbeat (every few seconds)


def node_name() -> str:
    return socket.gethostname()


def acquire(job: Job, gpus: list[int], count: int) -> list[int] | None:
    """Lease ``count`` of this node's ``gpus`` for the job, or None if not enough are free."""
    node = node_name()
    now = timezone.now()
    try:
        with transaction.atomic():
            GpuLease.objects.filter(node=node, expires_at__lt=now).delete()  # dead holders
            held = set(
                GpuLease.objects.select_for_update()
                .filter(node=node)
                .values_list("gpu_index", flat=True)
            )
            free = [g for g in gpus if g not in held]
            if len(free) < count:
                return None
            chosen = free[:count]
            GpuLease.objects.bulk_create(
                GpuLease(
                    node=node, gpu_index=g, job=job, expires_at=now + timedelta(seconds=LEASE_S)
                )
                for g in chosen
            )
            return chosen
    except IntegrityError:
        return None  # another worker took one of them at the same moment


def renew(job: Job) -> None:
    GpuLease.objects.filter(job=job, node=node_name()).update(
        expires_at=timezone.now() + timedelta(seconds=LEASE_S)
    )


def release(job: Job) -> None:
    GpuLease.objects.filter(job=job, node=node_name()).delete()
