"""Evaluation actions: systems, default pairs, campaigns (sides, assignments), votes, undo.

Also the factories other evaluation tests (and the persona matrix) build on.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from django.utils import timezone

from tests.webapp.factories import make_job, make_prompt_set
from webapp.annotation import actions as annotation_actions
from webapp.annotation import queue
from webapp.annotation.models import Assignment, Item, Vote
from webapp.evaluation import actions
from webapp.evaluation.models import EvalStatus, Evaluation, System, SystemAnswer, SystemStatus
from webapp.jobs.models import Checkpoint
from webapp.lib.errors import ActionError
from webapp.promptsets.models import Split

# Names that must never reach an annotator (searched for in their pages).
GAD_JOB, SEQKD_JOB, STUDENT = "Aurora-run", "Borealis-run", "org/tiny-student"
TEACHER_NAME, TEACHER_MODEL = "Oracle-T", "oracle-model-x"
ANSWER_WORDS = ["alpha", "bravo", "charlie", "delta"]


def make_evaluation(team, n_prompts: int = 5, teacher: bool = False, tmp=None) -> Evaluation:
    """A ready evaluation: GAD final, SeqKD final, the student before distillation
    (and the teacher), each with an answer to every held-out prompt."""
    from tests.webapp.test_teachers import make_endpoint

    prompt_set = make_prompt_set(team, n=n_prompts, name="held-out")
    prompt_set.prompts.update(split=Split.TEST)
    gad = make_job(team, prompt_set, status="succeeded", name=GAD_JOB, method="gad")
    seqkd = make_job(team, prompt_set, status="succeeded", name=SEQKD_JOB, method="seqkd", pair=gad)
    gad.pair = seqkd
    gad.save(update_fields=["pair"])
    root = tmp or "/nonexistent/runs"
    specs = [
        actions.checkpoint_system(
            Checkpoint.objects.create(job=job, step=100, path=f"{root}/{job.name}/final")
        )
        for job in (gad, seqkd)
    ]
    specs.append(actions.base_system(gad))
    if teacher:
        specs.append(
            actions.teacher_system(make_endpoint(team, name=TEACHER_NAME, model=TEACHER_MODEL))
        )
    evaluation = Evaluation.objects.create(
        team=team,
        name="Held-out comparison",
        prompt_set=prompt_set,
        num_prompts=n_prompts,
        status=EvalStatus.READY,
    )
    prompts = list(prompt_set.prompts.order_by("index"))
    evaluation.prompts.set(prompts)
    for position, spec in enumerate(specs):
        system = System.objects.create(
            evaluation=evaluation,
            name=spec.name,
            kind=spec.kind,
            method=spec.method,
            teacher=spec.teacher,
            job=spec.job,
            checkpoint=spec.checkpoint,
            path=spec.path,
            position=position,
            status=SystemStatus.DONE,
            num_answers=n_prompts,
        )
        SystemAnswer.objects.bulk_create(
            SystemAnswer(
                system=system,
                prompt=p,
                response=f"Answer {ANSWER_WORDS[position]} to q{p.index}",
            )
            for p in prompts
        )
    return evaluation


def systems_of(evaluation: Evaluation) -> dict[str, System]:
    by = {}
    for s in evaluation.systems.select_related("job"):
        key = s.kind if s.kind != "checkpoint" else s.method
        by[key] = s
    return by


def make_campaign(evaluation, annotators, overlap: int = 1, seed: int = 0, pairs=None):
    pairs = pairs or annotation_actions.default_pairs(
        list(evaluation.systems.select_related("job"))
    )
    return annotation_actions.create_campaign(
        evaluation,
        None,
        title="Which answer is better?",
        pairs=pairs,
        annotators=annotators,
        overlap=overlap,
        seed=seed,
    )


# ----------------------------------------------------------------------------- systems


def test_default_pairs_are_gad_vs_before_distillation_and_gad_vs_seqkd(personas):
    evaluation = make_evaluation(personas.team, teacher=True)
    s = systems_of(evaluation)
    pairs = annotation_actions.default_pairs(list(evaluation.systems.select_related("job")))
    assert [(a.pk, b.pk) for a, b in pairs] == [
        (s["gad"].pk, s["base"].pk),
        (s["gad"].pk, s["seqkd"].pk),
    ]


def test_no_default_pairs_without_a_gad_system(personas):
    evaluation = make_evaluation(personas.team)
    evaluation.systems.filter(method="gad").delete()
    assert annotation_actions.default_pairs(list(evaluation.systems.select_related("job"))) == []


def test_create_evaluation_fixes_the_test_prompts_and_dedupes_systems(personas):
    prompt_set = make_prompt_set(personas.team, n=6, name="mixed")
    test_ids = list(prompt_set.prompts.order_by("index").values_list("pk", flat=True)[:2])
    prompt_set.prompts.filter(pk__in=test_ids).update(split=Split.TEST)
    evaluation = actions.create_evaluation(
        personas.team,
        personas.member,
        name="e",
        prompt_set=prompt_set,
        prompt_choice="test",
        systems=[
            actions.model_system("models/a"),
            actions.model_system("models/a"),
            actions.base_system(personas.job),
        ],
    )
    assert sorted(evaluation.prompts.values_list("pk", flat=True)) == sorted(test_ids)
    assert evaluation.num_prompts == 2
    assert evaluation.systems.count() == 2
    assert evaluation.status == EvalStatus.GENERATING and evaluation.greedy


def test_create_evaluation_refuses_one_system_and_an_empty_test_split(personas):
    with pytest.raises(ActionError, match="at least two"):
        actions.create_evaluation(
            personas.team,
            None,
            name="e",
            prompt_set=personas.prompt_set,
            prompt_choice="all",
            systems=[actions.model_system("org/a"), actions.model_system("org/a")],
        )
    with pytest.raises(ActionError, match="no prompts in its held-out test split"):
        actions.create_evaluation(
            personas.team,
            None,
            name="e",
            prompt_set=personas.prompt_set,
            prompt_choice="test",
            systems=[actions.model_system("org/a"), actions.model_system("org/b")],
        )


def test_finish_system_fails_it_when_prompts_lack_answers(personas):
    evaluation = make_evaluation(personas.team, n_prompts=3)
    system = evaluation.systems.first()
    SystemAnswer.objects.filter(system=system).first().delete()
    System.objects.filter(pk=system.pk).update(status=SystemStatus.RUNNING)
    system = actions.finish_system(system)
    assert system.status == SystemStatus.FAILED
    assert "1 of 3 prompts got no answer" in system.error
    evaluation.refresh_from_db()
    assert evaluation.status == EvalStatus.FAILED
    assert actions.request_generation(evaluation) == 1
    system.refresh_from_db()
    assert system.status == SystemStatus.PENDING


# ----------------------------------------------------------------------------- campaigns


def test_items_are_prompts_times_pairs_each_given_to_k_people_nobody_twice(personas):
    evaluation = make_evaluation(personas.team, n_prompts=5)
    people = [personas.owner, personas.member, personas.annotator]
    campaign = make_campaign(evaluation, people, overlap=2)
    items = Item.objects.filter(pair__campaign=campaign)
    assert items.count() == 5 * 2
    per_item = Counter(Assignment.objects.filter(campaign=campaign).values_list("item", flat=True))
    assert set(per_item.values()) == {2}
    pairs = Assignment.objects.filter(campaign=campaign).values_list("item", "annotator")
    assert len(set(pairs)) == len(pairs)
    load = Counter(a for _, a in pairs)
    assert max(load.values()) - min(load.values()) <= 1  # the load is even


def test_left_right_order_is_balanced_per_pair_over_many_items(personas):
    evaluation = make_evaluation(personas.team, n_prompts=101)
    campaign = make_campaign(evaluation, [personas.annotator], seed=7)
    for pair in campaign.pairs.all():
        sides = list(pair.items.order_by("prompt__index").values_list("a_on_left", flat=True))
        assert abs(sum(sides) - len(sides) / 2) <= 0.5
        # Random, not a pattern: the order differs between the pairs and from alternation.
        assert sides != [i % 2 == 0 for i in range(len(sides))]
    orders = [
        list(p.items.order_by("prompt__index").values_list("a_on_left", flat=True))
        for p in campaign.pairs.all()
    ]
    assert orders[0] != orders[1]


def test_balanced_sides_is_random_yet_exact():
    import random

    draws = [annotation_actions.balanced_sides(10, random.Random(seed)) for seed in range(20)]
    assert all(sum(d) == 5 for d in draws)
    assert len({tuple(d) for d in draws}) > 15


def test_campaign_refuses_a_title_that_names_a_system_or_the_method(personas):
    evaluation = make_evaluation(personas.team)
    people = [personas.annotator]
    pairs = annotation_actions.default_pairs(list(evaluation.systems.select_related("job")))
    for title in (f"{GAD_JOB} vs the rest", "GAD against SeqKD", f"is {STUDENT} better?"):
        with pytest.raises(ActionError, match="must not know"):
            annotation_actions.create_campaign(
                evaluation, None, title=title, pairs=pairs, annotators=people, overlap=1
            )


def test_overlap_larger_than_the_people_is_refused(personas):
    evaluation = make_evaluation(personas.team)
    with pytest.raises(ActionError, match="needs 3 different annotators"):
        make_campaign(evaluation, [personas.annotator, personas.member], overlap=3)


# ----------------------------------------------------------------------------- votes


def _first(user, campaign) -> Assignment:
    return queue.next_assignment(user, campaign)


def test_a_second_vote_on_the_same_assignment_is_refused(personas):
    campaign = make_campaign(make_evaluation(personas.team), [personas.annotator])
    assignment = _first(personas.annotator, campaign)
    annotation_actions.record_vote(assignment, personas.annotator, "left")
    with pytest.raises(annotation_actions.AlreadyVoted):
        annotation_actions.record_vote(assignment, personas.annotator, "right")
    assert Vote.objects.filter(assignment=assignment).count() == 1


def test_nobody_votes_on_someone_elses_assignment(personas):
    campaign = make_campaign(make_evaluation(personas.team), [personas.annotator])
    with pytest.raises(ActionError, match="not assigned to you"):
        annotation_actions.record_vote(_first(personas.annotator, campaign), personas.member, "tie")


def test_skip_moves_the_item_to_the_end_of_the_queue(personas):
    campaign = make_campaign(make_evaluation(personas.team, n_prompts=3), [personas.annotator])
    first = _first(personas.annotator, campaign)
    annotation_actions.skip(first)
    assert _first(personas.annotator, campaign).pk != first.pk
    for _ in range(5):
        current = _first(personas.annotator, campaign)
        if current.pk == first.pk:
            break
        annotation_actions.record_vote(current, personas.annotator, "tie")
    assert _first(personas.annotator, campaign).pk == first.pk


def test_undo_withdraws_only_the_last_vote_within_the_window(personas):
    campaign = make_campaign(make_evaluation(personas.team), [personas.annotator])
    user = personas.annotator
    a1 = _first(user, campaign)
    annotation_actions.record_vote(a1, user, "left")
    a2 = _first(user, campaign)
    annotation_actions.record_vote(a2, user, "right")

    assert annotation_actions.undo_last_vote(user, campaign).pk == a2.pk
    assert _first(user, campaign).pk == a2.pk
    assert queue.progress(user, campaign)[0] == 1
    with pytest.raises(ActionError, match="earlier votes are final"):
        annotation_actions.undo_last_vote(user, campaign)  # a1 stays

    annotation_actions.record_vote(a2, user, "tie")  # a new vote after the undo is allowed
    later = timezone.now() + annotation_actions.UNDO_WINDOW + timedelta(seconds=1)
    with pytest.raises(ActionError, match="within 2 minutes"):
        annotation_actions.undo_last_vote(user, campaign, now=later)
    assert Vote.objects.filter(assignment=a2, undone_at__isnull=True).get().choice == "tie"
    assert Vote.objects.filter(assignment=a2, undone_at__isnull=False).count() == 1


def test_undo_of_another_persons_vote_is_impossible(personas):
    evaluation = make_evaluation(personas.team)
    campaign = make_campaign(evaluation, [personas.annotator, personas.member], overlap=2)
    annotation_actions.record_vote(_first(personas.annotator, campaign), personas.annotator, "left")
    with pytest.raises(ActionError, match="no vote to undo"):
        annotation_actions.undo_last_vote(personas.member, campaign)
