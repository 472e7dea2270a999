"""The judge run against a scripted judge server: arithmetic, order swapping, retries,
cache, permanent failures, the budget and the probe of a judge that cannot judge,
through the real openai client path."""

from __future__ import annotations

import asyncio

import pytest

from tests.judge.scripted import REFERENCE, QualityJudge, ScriptedJudge, garbage, is_verdict
from trainer.judge import (
    JudgeConfig,
    JudgeItem,
    forecast,
    forecast_run,
    judge,
    render_question,
    reports_by_group,
    verdict_messages,
)
from trainer.ratelimit import Limits
from trainer.teacher import (
    AnswerStore,
    Budget,
    RetryPolicy,
    TeacherError,
    TeacherSpec,
    prompt_hash,
)

FAST_RETRY = RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.05)


def make_items(n: int = 4) -> list[JudgeItem]:
    return [JudgeItem(f"p{i}", [{"role": "user", "content": f"Question {i}?"}]) for i in range(n)]


def same_quality(q: float, n: int = 4) -> dict[str, str]:
    return {f"p{i}": f"an answer q={q:g}" for i in range(n)}


def run(server, items, answers, store, config=None, concurrency=4, budget=None):
    spec = TeacherSpec(server.url, "judge-model")
    return asyncio.run(
        judge(
            items,
            answers,
            spec,
            store,
            config or JudgeConfig(),
            Limits(concurrency=concurrency),
            FAST_RETRY,
            budget=budget,
        )
    )


@pytest.fixture
def store(tmp_path):
    s = AnswerStore(tmp_path / "judge.sqlite")
    yield s
    s.close()


def test_both_orders_are_averaged_so_position_bias_cancels(store):
    # The judge adds 3 points to whichever answer it sees first.
    with ScriptedJudge(QualityJudge(bias=3)) as server:
        answers = {"even": same_quality(5), "better": same_quality(7)}
        report = run(server, make_items(), answers, store)
    even, better = report.systems
    # even: first "8 5" -> 100·8/13, then "8 5" with the model second -> 100·5/13
    item = next(r for r in report.items if r.system == "even")
    assert item.order_scores == (pytest.approx(800 / 13), pytest.approx(500 / 13))
    assert even.mean == pytest.approx(50.0)
    # better: "10 5" -> 100·10/15; "8 7" with the model second -> 100·7/15
    assert better.mean == pytest.approx((1000 / 15 + 700 / 15) / 2)
    assert (better.ci_low, better.ci_high) == (pytest.approx(better.mean),) * 2
    # |61.5 - 38.5| and |66.7 - 46.7| both exceed 10 points
    assert even.n_disagreements == better.n_disagreements == 4
    assert even.n_scored == 4 and even.n_failures == even.n_unjudged == 0
    assert even.mean_length == 3.0  # "an answer q=5"


def test_disagreement_threshold_and_an_unbiased_judge(store):
    with ScriptedJudge(QualityJudge(bias=3)) as server:
        report = run(
            server, make_items(), {"even": same_quality(5)}, store, JudgeConfig(disagreement=25)
        )
    assert report.systems[0].n_disagreements == 0  # 23.1 points apart: under 25
    with ScriptedJudge(QualityJudge(bias=0)) as server:
        varied = {f"p{i}": f"q={q}" for i, q in enumerate([3, 5, 7, 9])}
        report = run(server, make_items(), {"varied": varied}, store)
    system = report.systems[0]
    expected = [100 * q / (q + 5) for q in (3, 5, 7, 9)]
    assert [r.score for r in report.items] == pytest.approx(expected)
    assert system.mean == pytest.approx(sum(expected) / 4)
    assert system.ci_low < system.mean < system.ci_high
    assert system.n_disagreements == 0


def test_calls_are_one_reference_per_prompt_and_two_verdicts_per_answer(store):
    items, answers = make_items(), {"a": same_quality(5), "b": same_quality(7)}
    spec = TeacherSpec("http://127.0.0.1:9/v1", "judge-model")
    assert forecast_run(items, answers, spec, store).calls == forecast(4, 2).calls == 4 + 16
    with ScriptedJudge(QualityJudge()) as server:
        report = run(server, items, answers, store)
        spec = TeacherSpec(server.url, "judge-model")
        assert forecast_run(items, answers, spec, store).calls == 0  # all cached now
    assert server.requests == 20
    s = report.summary
    assert (s.references, s.verdicts, s.nudges, s.requested) == (4, 16, 0, 20)
    assert s.prompt_tokens == 20 * 10 and s.completion_tokens == 20 * 3
    # The reference is asked once per prompt, whatever the number of systems.
    references = [prompt_hash(it.messages) for it in items]
    assert all(server.received[h] == 1 for h in references)


def test_forecast_counts_calls_minus_cached_and_estimates_tokens():
    fc = forecast(500, 3, mean_prompt_chars=400, mean_answer_chars=2000)
    assert (fc.reference_calls, fc.verdict_calls, fc.cached) == (500, 3000, 0)
    assert fc.est_completion_tokens == 500 * 500 + 3000 * 200
    assert fc.est_prompt_tokens > 3000 * (2 * 500 + 100)  # two answers and the question
    cached = forecast(500, 3, cached_references=500, cached_verdicts=1000)
    assert (cached.calls, cached.cached) == (2000, 1500)


def test_unreadable_verdict_is_retried_once_then_recorded_as_a_failure_never_a_zero(store):
    unreadable = QualityJudge(unreadable=lambda question, nudged: "Question 1?" in question)
    with ScriptedJudge(unreadable) as server:
        report = run(server, make_items(), {"s": same_quality(7)}, store)
    system = report.systems[0]
    failed = next(r for r in report.items if r.item_id == "p1")
    assert failed.status == "failed" and failed.score is None
    assert "unreadable verdict" in failed.reason and "after a retry" in failed.reason
    assert (system.n_scored, system.n_failures) == (3, 1)
    assert system.mean == pytest.approx(100 * 7 / 12)  # the 3 others only: no zero
    assert report.summary.nudges == 2  # one retry per order, then no more
    assert server.requests == 4 + 8 + 2
    nudged = [h for h, n in server.received.items() if n == 1]
    assert len(nudged) == len(server.received) == 14  # every prompt asked exactly once


def test_a_nudge_that_works_scores_the_item(store):
    first_try_only = QualityJudge(unreadable=lambda question, nudged: not nudged)
    with ScriptedJudge(first_try_only) as server:
        report = run(server, make_items(), {"s": same_quality(5)}, store)
    system = report.systems[0]
    assert (system.n_scored, system.n_failures, system.mean) == (4, 0, 50.0)
    assert report.summary.nudges == 8 and server.requests == 4 + 8 + 8


def test_rescoring_from_the_cache_sends_no_request(store):
    flaky = QualityJudge(bias=1, unreadable=lambda question, nudged: "Question 2?" in question)
    answers = {"a": same_quality(5), "b": same_quality(6)}
    with ScriptedJudge(flaky) as server:
        first = run(server, make_items(), answers, store)
        asked = server.requests
        again = run(server, make_items(), answers, store)
    assert asked == 4 + 16 + 4
    assert server.requests == asked  # nothing new, not even the retried verdicts
    assert again.summary.requested == 0 and again.summary.cached == asked
    assert [s.mean for s in again.systems] == [s.mean for s in first.systems]
    assert [s.n_failures for s in again.systems] == [1, 1]


def test_401_stops_the_run_with_the_typed_error_and_sends_nothing_more(store):
    with ScriptedJudge(QualityJudge(), schedule=lambda n, h: "401") as server:
        with pytest.raises(TeacherError) as caught:
            run(server, make_items(), {"s": same_quality(5)}, store, concurrency=1)
    assert caught.value.scope == "run" and caught.value.permanent
    assert caught.value.status == 401 and "rejected" in str(caught.value)
    assert server.requests == 1


def test_401_after_the_references_stops_before_any_other_verdict(store):
    # The key is revoked once the 4 reference answers are in.
    with ScriptedJudge(QualityJudge(), schedule=lambda n, h: "401" if n > 4 else "pass") as server:
        with pytest.raises(TeacherError) as caught:
            run(server, make_items(), {"s": same_quality(5)}, store, concurrency=1)
    assert caught.value.status == 401
    assert server.requests == 5


def test_unreachable_judge_stops_the_run(store):
    from tests.conftest import free_port

    spec = TeacherSpec(f"http://127.0.0.1:{free_port()}/v1", "judge-model", timeout=1)
    with pytest.raises(TeacherError) as caught:
        asyncio.run(judge(make_items(), {"s": same_quality(5)}, spec, store, retry=FAST_RETRY))
    assert caught.value.scope == "run" and "cannot connect" in str(caught.value)


def test_token_budget_stops_cleanly_and_leaves_items_unjudged_not_failed(store):
    config = JudgeConfig(reference_max_tokens=16, verdict_max_tokens=16)
    with ScriptedJudge(QualityJudge()) as server:
        budget = Budget(cap=340)
        report = run(server, make_items(), {"s": same_quality(5)}, store, config, 1, budget)
    system = report.systems[0]
    assert report.summary.stopped == "budget"
    assert 4 < server.requests < 12 and report.summary.tokens <= 340
    assert system.n_unjudged > 0 and system.n_failures == 0
    assert system.n_scored + system.n_unjudged == 4
    assert all("budget" in r.reason for r in report.items if r.status == "unjudged")
    # One budget across the three rounds: what they spent is the run's, and it was the
    # run's own cap that said no.
    assert budget.spent == report.summary.tokens and budget.stopped_by == "cap"


def test_a_verdict_without_answer_after_retries_is_asked_again_next_run(store):
    items, answers = make_items(), {"s": same_quality(5)}
    question = render_question(items[2].messages)
    down = prompt_hash(verdict_messages(question, answers["s"]["p2"], REFERENCE))
    outage = [True]
    schedule = lambda n, h: "500" if outage[0] and h == down else "pass"  # noqa: E731
    with ScriptedJudge(QualityJudge(), schedule=schedule) as server:
        report = run(server, items, answers, store)
        item = next(r for r in report.items if r.item_id == "p2")
        assert item.status == "unjudged" and "after retries" in item.reason
        assert report.summary.failed == 1 and report.systems[0].n_failures == 0
        asked, outage[0] = server.requests, False
        report = run(server, items, answers, store)
    assert server.requests == asked + 1 and report.systems[0].n_scored == 4


def test_a_verdict_the_judge_refuses_is_a_failure_and_not_paid_again(store):
    items, answers = make_items(), {"s": same_quality(5)}
    question = render_question(items[0].messages)
    refused = prompt_hash(verdict_messages(question, REFERENCE, answers["s"]["p0"]))
    with ScriptedJudge(
        QualityJudge(), schedule=lambda n, h: "400" if h == refused else "pass"
    ) as s:
        report = run(s, items, answers, store)
        again = run(s, items, answers, store)
    item = next(r for r in report.items if r.item_id == "p0")
    assert item.status == "failed" and "refused" in item.reason
    assert item.order_scores[0] == 50.0 and item.order_scores[1] is None
    assert report.summary.nudges == 0  # a nudge cannot help a refused request
    assert s.received[refused] == 1 and again.summary.requested == 0


def test_no_reference_answer_fails_the_item_for_every_system(store):
    def reply(messages):
        if not is_verdict(messages) and messages[0]["content"] == "Question 3?":
            return ""  # the judge wrote nothing
        return QualityJudge()(messages)

    answers = {"a": same_quality(5), "b": same_quality(6)}
    with ScriptedJudge(reply) as server:
        report = run(server, make_items(), answers, store)
    failed = [r for r in report.items if r.item_id == "p3"]
    assert [r.status for r in failed] == ["failed", "failed"]
    assert all("no reference answer" in r.reason for r in failed)
    assert server.requests == 4 + 2 * 2 * 3  # no verdict asked for p3


def test_systems_are_judged_on_the_prompts_they_answered(store):
    partial = {k: v for k, v in same_quality(5).items() if k != "p0"}
    with ScriptedJudge(QualityJudge()) as server:
        report = run(server, make_items(), {"full": same_quality(5), "partial": partial}, store)
    full, part = report.systems
    assert (full.n_prompts, full.n_answers, full.n_scored) == (4, 4, 4)
    assert (part.n_prompts, part.n_answers, part.n_scored) == (4, 3, 3)
    assert "partial" in report.table() and "3/3" in report.table()
    # Identical answers to the same prompt share their verdicts: asked once.
    assert server.requests == 4 + 8


def test_progress_reports_each_round_with_the_run_s_tokens_so_far(store):
    seen = []
    flaky = QualityJudge(unreadable=lambda question, nudged: "Question 0?" in question)
    with ScriptedJudge(flaky) as server:
        spec = TeacherSpec(server.url, "judge-model")
        report = asyncio.run(
            judge(make_items(), {"s": same_quality(5)}, spec, store, on_progress=seen.append)
        )
    assert [p.phase for p in seen] == ["references"] * 5 + ["verdicts"] * 9 + ["retries"] * 3
    assert [(p.done, p.total) for p in seen if p.phase == "retries"] == [(0, 2), (1, 2), (2, 2)]
    tokens = [p.tokens for p in seen]
    assert tokens == sorted(tokens) and tokens[-1] == report.summary.tokens == 14 * 13


def test_reports_by_group_score_each_test_set_on_its_own_items(store):
    # p0, p1 form test set "in"; p2, p3 set "out", where the system answers better.
    answers = {"sys": {"p0": "a q=5", "p1": "a q=5", "p2": "a longer answer q=7", "p3": "q=7"}}
    with ScriptedJudge(QualityJudge()) as server:
        report = run(server, make_items(), answers, store)
    group_of = {"p0": "in", "p1": "in", "p2": "out", "p3": "out"}
    grouped = reports_by_group(report, group_of, {"in": 2, "out": 2, "empty": 0})
    assert list(grouped) == ["in", "out", "empty"]
    (inside,), (outside,), (empty,) = grouped.values()
    assert inside.mean == pytest.approx(50.0) and inside.n_scored == 2
    assert outside.mean == pytest.approx(100 * 7 / 12) and outside.n_prompts == 2
    assert inside.mean_length == 2.0 and outside.mean_length == 2.5
    assert empty.mean is None and empty.n_answers == 0 and empty.ci_low is None
    # The pooled report averages over all four items.
    assert report.systems[0].mean == pytest.approx((50 + 100 * 7 / 12) / 2)


# ---------------------------------------------------------------------------- the probe


def test_a_judge_whose_first_verdicts_cannot_be_read_stops_after_them(store):
    # 4 prompts x 2 systems x 2 orders = 16 verdicts; the probe is the first 8 (p0, p1).
    reply = "<b>Both answers are fine</b> " * 20
    answers = {"a": same_quality(5), "b": same_quality(7)}
    with ScriptedJudge(garbage(reply)) as server:
        report = run(server, make_items(), answers, store)
    s = report.summary
    assert s.stopped == "unreadable" and s.unreadable == 8
    assert s.unreadable_example == reply[:300] + "…"
    # The probe's verdicts and their retries, not the other 8 verdicts nor their retries.
    assert server.requests == 4 + 8 + 8
    assert (s.verdicts, s.nudges, s.requested, s.cached) == (16, 8, 20, 0)
    by_prompt = {(r.item_id, r.system): r for r in report.items}
    for system in answers:
        for item in ("p0", "p1"):
            assert by_prompt[item, system].status == "failed"
            assert "unreadable verdict" in by_prompt[item, system].reason
        for item in ("p2", "p3"):
            assert by_prompt[item, system].status == "unjudged"
            assert "could not be read" in by_prompt[item, system].reason
    assert all(r.score is None for r in report.items)
    assert "stopped: unreadable (8 unreadable after a retry)" in s.line()


def test_a_judge_that_needs_the_nudge_passes_the_probe_and_nothing_is_asked_twice(store):
    first_try_only = QualityJudge(unreadable=lambda question, nudged: not nudged)
    with ScriptedJudge(first_try_only) as server:
        report = run(server, make_items(), {"a": same_quality(5), "b": same_quality(7)}, store)
    assert report.summary.stopped == "done"
    assert [s.n_scored for s in report.systems] == [4, 4]
    assert server.requests == 4 + 16 + 16 and max(server.received.values()) == 1
    s = report.summary
    assert (s.nudges, s.requested, s.cached) == (16, 36, 0)  # the probe's not counted twice


def test_a_probe_half_unreadable_is_not_most_and_the_run_goes_on(store):
    # p0's 4 verdicts of the 8 in the probe are unreadable, even after the nudge.
    half = QualityJudge(unreadable=lambda question, nudged: "Question 0?" in question)
    with ScriptedJudge(half) as server:
        report = run(server, make_items(), {"a": same_quality(5), "b": same_quality(7)}, store)
    assert report.summary.stopped == "done" and report.summary.unreadable == 0
    assert [(s.n_scored, s.n_failures) for s in report.systems] == [(3, 1), (3, 1)]
    assert server.requests == 4 + 16 + 4


def test_no_probe_with_probe_verdicts_zero(store):
    with ScriptedJudge(garbage("no scores here")) as server:
        report = run(
            server,
            make_items(),
            {"a": same_quality(5), "b": same_quality(7)},
            store,
            JudgeConfig(probe_verdicts=0),
        )
    assert report.summary.stopped == "done"
    assert server.requests == 4 + 16 + 16
    assert all(r.status == "failed" for r in report.items)


def test_a_judge_that_takes_no_temperature_judges_at_1_and_the_report_says_so(store):
    """The paper's protocol judges at temperature 0; a reasoning model accepts only its
    default (1). The run goes on, sending no temperature, and its report says so."""
    from trainer.teacher import Dialect

    items = make_items()
    with ScriptedJudge(QualityJudge()) as server:
        spec = TeacherSpec(server.url, "judge-model", dialect=Dialect(send_temperature=False))
        report = asyncio.run(
            judge(items, {"a": same_quality(5)}, spec, store, JudgeConfig(), retry=FAST_RETRY)
        )
        greedy = run(server, items, {"a": same_quality(5)}, store)
    assert "judged at 1, not at the protocol's 0" in report.judge["deviation"]
    assert report.table().endswith(f"note: {report.judge['deviation']}")
    assert report.to_dict()["judge"]["deviation"] == report.judge["deviation"]
    assert "deviation" not in greedy.judge and "note:" not in greedy.table()
