"""Every change to annotation campaigns and their votes goes through here."""

from __future__ import annotations

import random
import re
from collections import defaultdict
from collections.abc import Sequence
from datetime import timedelta

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone

from webapp.annotation.models import Assignment, Campaign, Choice, Item, Pair, Vote
from webapp.evaluation.models import Evaluation, System, SystemAnswer, SystemKind
from webapp.jobs.models import Method
from webapp.lib.errors import ActionError

UNDO_WINDOW = timedelta(minutes=2)
MAX_OVERLAP = 10
# Words that tell an annotator which kind of system they are looking at.
REVEALING_WORDS = ("gad", "seqkd", "teacher", "student", "distil", "baseline")


class AlreadyVoted(ActionError):
    """A second vote on the same assignment (double click, a second tab, a replay)."""


class CampaignClosed(ActionError):
    """A vote, skip or undo in a campaign that was closed."""


# ----------------------------------------------------------------------------- campaigns


def default_pairs(systems: Sequence[System]) -> list[tuple[System, System]]:
    """The paper's comparisons: each GAD checkpoint vs its student before distillation,
    and vs the SeqKD checkpoint of its pair (or of the same student)."""
    pairs = []
    for gad in systems:
        if gad.kind != SystemKind.CHECKPOINT or gad.method != Method.GAD or gad.job is None:
            continue
        student = gad.job.student
        base = next((s for s in systems if s.kind == SystemKind.BASE and s.path == student), None)
        seqkd = [s for s in systems if s.kind == SystemKind.CHECKPOINT and s.method == Method.SEQKD]
        mate = next((s for s in seqkd if gad.job.pair_id and s.job_id == gad.job.pair_id), None)
        mate = mate or next((s for s in seqkd if s.job and s.job.student == student), None)
        pairs += [(gad, other) for other in (base, mate) if other is not None]
    return pairs


def names_in(title: str, evaluation: Evaluation) -> list[str]:
    """Names of systems (and their jobs, models, teachers) that ``title`` would reveal."""
    lowered = title.lower()
    found = [w for w in REVEALING_WORDS if re.search(rf"\b{w}", lowered)]
    for system in evaluation.systems.select_related("job", "teacher"):
        words = [system.name, system.path]
        if system.job:
            words += [system.job.name, system.job.student]
        if system.teacher:
            words += [system.teacher.name, system.teacher.model]
        found += [w for w in words if w and len(w) >= 3 and w.lower() in lowered]
    return sorted(set(found))


def balanced_sides(n: int, rng: random.Random) -> list[bool]:
    """n left/right draws with A on the left exactly ⌊n/2⌋ or ⌈n/2⌉ times, in random order.

    Balanced by construction, so a position bias of the annotators cannot favour one
    system; still random per item, and recorded on it.
    """
    sides = [True] * (n // 2) + [False] * (n // 2)
    if n % 2:
        sides.append(rng.random() < 0.5)
    rng.shuffle(sides)
    return sides


def create_campaign(
    evaluation: Evaluation,
    user: User | None,
    *,
    title: str,
    pairs: Sequence[tuple[System, System]],
    annotators: Sequence[User],
    overlap: int,
    seed: int | None = None,
) -> Campaign:
    """Items = prompts answered by both systems × pairs, each given to ``overlap`` people.

    Each item goes to the people with the fewest items so far (ties drawn at random),
    so the load is even; nobody gets an item twice; every queue is shuffled.
    """
    title = title.strip()
    if not title:
        raise ActionError("Give the campaign a title (annotators see it).")
    revealing = names_in(title, evaluation)
    if revealing:
        raise ActionError(
            "Annotators see the title, and it names what they must not know: "
            f"{', '.join(revealing)}. Choose a neutral title."
        )
    if not pairs:
        raise ActionError("Choose at least one pair of systems.")
    people = list({u.pk: u for u in annotators}.values())
    if not 1 <= overlap <= min(MAX_OVERLAP, len(people)):
        raise ActionError(
            f"Each item needs {overlap} different annotators, but {len(people)} were chosen; "
            "lower the overlap or add people."
        )
    seed = random.SystemRandom().randrange(2**31) if seed is None else seed
    rng = random.Random(seed)
    answered = defaultdict(set)
    ids = {s.pk for pair in pairs for s in pair}
    for system_id, prompt_id in SystemAnswer.objects.filter(system_id__in=ids).values_list(
        "system_id", "prompt_id"
    ):
        answered[system_id].add(prompt_id)
    with transaction.atomic():
        campaign = Campaign.objects.create(
            evaluation=evaluation, title=title, overlap=overlap, seed=seed, created_by=user
        )
        items: list[Item] = []
        for a, b in pairs:
            if a.pk == b.pk or a.evaluation_id != evaluation.pk or b.evaluation_id != evaluation.pk:
                raise ActionError("A pair needs two different systems of this evaluation.")
            pair = Pair.objects.create(campaign=campaign, system_a=a, system_b=b)
            prompts = sorted(answered[a.pk] & answered[b.pk])
            if not prompts:
                raise ActionError(f"{a.name} and {b.name} have no answers to the same prompt yet.")
            sides = balanced_sides(len(prompts), rng)
            items += [
                Item(pair=pair, prompt_id=pk, a_on_left=left)
                for pk, left in zip(prompts, sides, strict=True)
            ]
        Item.objects.bulk_create(items, batch_size=2000)
        rng.shuffle(items)
        load = {u.pk: 0 for u in people}
        queues: dict[int, list[Item]] = defaultdict(list)
        for item in items:
            chosen = sorted(load, key=lambda pk: (load[pk], rng.random()))[:overlap]
            for pk in chosen:
                load[pk] += 1
                queues[pk].append(item)
        assignments = []
        for pk, queue in queues.items():
            rng.shuffle(queue)
            assignments += [
                Assignment(campaign=campaign, item=item, annotator_id=pk, position=position)
                for position, item in enumerate(queue)
            ]
        Assignment.objects.bulk_create(assignments, batch_size=2000)
    return campaign


def close_campaign(campaign: Campaign) -> bool:
    """Take no more votes: the results are final. False when it was closed already."""
    return bool(
        Campaign.objects.filter(pk=campaign.pk, closed_at__isnull=True).update(
            closed_at=timezone.now()
        )
    )


def reopen_campaign(campaign: Campaign) -> bool:
    """Take votes again, on the items still without one. False when it was open."""
    return bool(
        Campaign.objects.filter(pk=campaign.pk, closed_at__isnull=False).update(closed_at=None)
    )


def _refuse_if_closed(campaign_id: int) -> None:
    """Lock the campaign's row until the transaction ends and refuse when it is closed,
    so that a vote racing a close either lands before it or is refused."""
    closed_at = (
        Campaign.objects.select_for_update()
        .filter(pk=campaign_id)
        .values_list("closed_at", flat=True)
        .first()
    )
    if closed_at is not None:
        raise CampaignClosed(
            f"This campaign was closed on {closed_at:%Y-%m-%d %H:%M} UTC and takes no more "
            "votes. Thank you for your work!"
        )


# ----------------------------------------------------------------------------- votes


def record_vote(assignment: Assignment, user: User, choice: str, comment: str = "") -> Vote:
    """The vote, or AlreadyVoted (the live-vote constraint refuses a second one), or
    CampaignClosed."""
    if assignment.annotator_id != user.pk:
        raise ActionError("This item is not assigned to you.")
    if choice not in Choice.values:
        raise ActionError(f"Choose one of {', '.join(Choice.values)}.")
    try:
        with transaction.atomic():
            _refuse_if_closed(assignment.campaign_id)
            vote = Vote.objects.create(
                assignment=assignment,
                annotator=user,
                choice=choice,
                comment=comment.strip()[:2000],
            )
    except IntegrityError:
        raise AlreadyVoted("You already voted on this item.") from None
    return vote


def skip(assignment: Assignment) -> None:
    """Move the item to the end of its person's queue (it comes back after the others)."""
    with transaction.atomic():
        _refuse_if_closed(assignment.campaign_id)
        Assignment.objects.filter(pk=assignment.pk).update(skipped_at=timezone.now())


def undo_last_vote(user: User, campaign: Campaign, now=None) -> Assignment:
    """Withdraw the person's last vote in the campaign if it is recent; return its item.

    Only the very last vote, within UNDO_WINDOW: every earlier vote is final. The row
    is locked and the update conditional, so two concurrent undos withdraw it once.
    """
    now = now or timezone.now()
    with transaction.atomic():
        _refuse_if_closed(campaign.pk)
        last = (
            Vote.objects.select_for_update()
            .filter(annotator=user, assignment__campaign=campaign)
            .order_by("-created_at", "-id")
            .first()
        )
        if last is None:
            raise ActionError("You have no vote to undo.")
        if last.undone_at is not None:
            raise ActionError("Your last vote is already undone; earlier votes are final.")
        minutes = int(UNDO_WINDOW.total_seconds() // 60)
        if last.created_at < now - UNDO_WINDOW:
            raise ActionError(f"Votes can be undone only within {minutes} minutes.")
        if not Vote.objects.filter(pk=last.pk, undone_at__isnull=True).update(undone_at=now):
            raise ActionError("Your last vote is already undone.")
        Assignment.objects.filter(pk=last.assignment_id).update(skipped_at=None)
    return Assignment.objects.get(pk=last.assignment_id)
