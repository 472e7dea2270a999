"""What the apps built on evaluations add to the evaluation pages.

The evaluation app sits below the apps that use its answers (``judging``: LLM-judge
runs and checkpoint sweeps; ``annotation``: blind pairwise campaigns), so it must not
import them. Each of them registers a ``Panel`` in its ``AppConfig.ready()``; the
evaluation pages walk the registry: the detail page includes each panel's template
with its context, the status poll merges each panel's state, the list page shows each
panel's note, and a deletion asks each panel whether it may go ahead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.http import HttpRequest

from webapp.evaluation.models import Evaluation
from webapp.teams.models import Team


@dataclass(frozen=True)
class Panel:
    """One app's part of the evaluation pages; every hook but ``template`` is optional.

    - ``template`` is included on the detail page, by ``position`` (its context is the
      page's, plus what ``context`` returns);
    - ``status(evaluation)`` adds keys to the page's status poll;
    - ``live(evaluation)`` keeps the page polling while the panel's work moves;
    - ``busy(evaluation)`` says why the evaluation cannot be deleted now (None: it can);
    - ``list_template`` is included on the list page, with ``list_context(user, team)``.
    """

    name: str
    position: int
    template: str
    context: Callable[[Evaluation, HttpRequest], dict] | None = None
    status: Callable[[Evaluation], dict] | None = None
    live: Callable[[Evaluation], bool] | None = None
    busy: Callable[[Evaluation], str | None] | None = None
    list_template: str = ""
    list_context: Callable[[object, Team], dict] | None = None


_panels: dict[str, Panel] = {}


def register(panel: Panel) -> None:
    """Add (or, on a second ``ready()``, replace) a panel, keyed by its name."""
    _panels[panel.name] = panel


def panels() -> list[Panel]:
    return sorted(_panels.values(), key=lambda panel: panel.position)


def detail_context(evaluation: Evaluation, request: HttpRequest) -> dict:
    """The detail page's context from every panel, and the templates to include."""
    context: dict = {"panel_templates": [p.template for p in panels()]}
    for panel in panels():
        if panel.context is not None:
            context |= panel.context(evaluation, request)
    return context


def status(evaluation: Evaluation) -> dict:
    found: dict = {}
    for panel in panels():
        if panel.status is not None:
            found |= panel.status(evaluation)
    return found


def live(evaluation: Evaluation) -> bool:
    return any(panel.live(evaluation) for panel in panels() if panel.live is not None)


def busy(evaluation: Evaluation) -> str | None:
    """Why the evaluation cannot be deleted now: the first panel that says so."""
    for panel in panels():
        reason = panel.busy(evaluation) if panel.busy is not None else None
        if reason:
            return reason
    return None


def list_context(user: object, team: Team) -> dict:
    context: dict = {"list_panel_templates": [p.list_template for p in panels() if p.list_template]}
    for panel in panels():
        if panel.list_context is not None:
            context |= panel.list_context(user, team)
    return context
