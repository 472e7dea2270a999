"""A worker reports itself (name, node, queues, GPUs) every few seconds while it runs,
and removes itself when it stops (``webapp.nodes.presence``)."""

from __future__ import annotations

import logging
import threading

from celery.signals import celeryd_after_setup, worker_ready, worker_shutdown
from django.conf import settings
from django.db import close_old_connections, connection

from webapp.claims import node_name
from webapp.nodes import actions, presence
from worker import leases

log = logging.getLogger(__name__)

_state: dict[str, object] = {}


def _queues(consumer) -> list[str]:
    try:
        return sorted(q.name for q in consumer.task_consumer.queues)
    except AttributeError:  # no task consumer (a worker started without queues)
        return []


@celeryd_after_setup.connect
def _consume_the_node_queue(sender=None, instance=None, **kwargs) -> None:
    """Every worker also consumes its node's own queue, whatever its ``-Q``: the leading
    worker of a multi-node job sends each member node its part there."""
    if instance is not None:
        # Its own exchange, as the queue a sender creates from the name alone.
        queue = leases.node_queue(node_name())
        instance.app.amqp.queues.select_add(queue, exchange=queue, routing_key=queue)


@worker_ready.connect
def _start_reporting(sender=None, **kwargs) -> None:
    name, queues = sender.hostname, _queues(sender)
    gpus = list(settings.GAD_WORKER_GPUS)
    halt = threading.Event()

    def beat() -> None:
        try:
            while True:
                try:
                    close_old_connections()
                    actions.report(name, node_name(), queues, gpus)
                except Exception:  # the database may be down a moment: report again later
                    log.warning("worker %s: could not report itself", name, exc_info=True)
                if halt.wait(presence.REPORT_EVERY_S):
                    return
        finally:
            connection.close()

    thread = threading.Thread(target=beat, daemon=True, name="worker-presence")
    _state["name"], _state["halt"], _state["thread"] = name, halt, thread
    thread.start()
    log.info("worker %s: reporting queues %s and GPUs %s", name, queues, gpus)


@worker_shutdown.connect
def _stop_reporting(**kwargs) -> None:
    halt, name = _state.get("halt"), _state.get("name")
    if isinstance(halt, threading.Event):
        halt.set()
    if isinstance(name, str):
        try:
            close_old_connections()
            actions.gone(name)
        except Exception:
            log.warning("worker %s: could not remove itself", name, exc_info=True)
