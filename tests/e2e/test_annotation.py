"""An annotator votes with the keyboard in a real browser; a member reads the results."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct horse battery staple"
# Keys pressed on the five items, then an undo of the last vote and a new one.
KEYS = ["1", "ArrowRight", "2", "ArrowLeft", "3"]
REVOTE = "ArrowDown"


@pytest.fixture
def team_with_campaign():
    from django.contrib.auth import get_user_model

    from tests.webapp.test_evaluation import make_campaign, make_evaluation, systems_of
    from webapp.teams.actions import create_team, set_membership

    users = get_user_model().objects
    owner = users.create_user("alice", password=PASSWORD)
    member = users.create_user("bob", password=PASSWORD)
    annotator = users.create_user("carol", password=PASSWORD)
    team = create_team("Acme", "acme", owner=owner)
    set_membership(team, member, "member")
    set_membership(team, annotator, "annotator")
    evaluation = make_evaluation(team, n_prompts=5)
    s = systems_of(evaluation)
    campaign = make_campaign(evaluation, [annotator], pairs=[(s["gad"], s["base"])], seed=1)
    return team, campaign, annotator


def login(page, base_url: str, username: str, next_path: str) -> None:
    page.goto(f"{base_url}/accounts/login/?next={next_path}")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")


def expected_counts(campaign) -> dict[str, int]:
    from webapp.annotation.models import Vote

    counts = {"win": 0, "tie": 0, "lose": 0}
    for vote in Vote.objects.filter(assignment__campaign=campaign, undone_at__isnull=True):
        if vote.choice == "tie":
            counts["tie"] += 1
        elif (vote.choice == "left") == vote.assignment.item.a_on_left:
            counts["win"] += 1
        else:
            counts["lose"] += 1
    return counts


def test_annotator_votes_with_the_keyboard_undoes_one_and_results_show_the_counts(
    live_server, page, team_with_campaign
):
    from webapp.annotation.models import Vote

    team, campaign, annotator = team_with_campaign
    start = f"/teams/{team.slug}/annotate/{campaign.pk}/"
    login(page, live_server.url, "carol", start)
    page.wait_for_url("**/annotate/items/**")
    progress = page.get_by_test_id("progress")
    expect(progress).to_have_text("0 / 5")
    assert page.get_by_role("button", name="Left better").is_visible()
    assert page.get_by_role("button", name="Right better").is_visible()

    # Two presses in the same instant: the second is ignored while the first is sent.
    all_disabled = page.evaluate(
        """() => {
            for (let i = 0; i < 2; i++) document.dispatchEvent(new KeyboardEvent("keydown", {key: "1"}));
            return [...document.querySelectorAll("button.vote")].every((b) => b.disabled);
        }"""
    )
    assert all_disabled
    expect(progress).to_have_text("1 / 5")
    assert Vote.objects.count() == 1

    urls = {page.url}
    for done, key in enumerate(KEYS[1:], start=2):
        page.keyboard.press(key)
        expect(progress if done < 5 else page.get_by_test_id("done")).to_contain_text(
            f"{done} / 5" if done < 5 else "All done"
        )
        urls.add(page.url)
    assert len(urls) == 5  # each item had its own (opaque) address
    assert [v.choice for v in Vote.objects.order_by("created_at")] == [
        "left",
        "right",
        "tie",
        "left",
        "right",
    ]

    page.get_by_role("button", name="Undo last vote").click()
    expect(progress).to_have_text("4 / 5")
    page.keyboard.press(REVOTE)
    expect(page.get_by_test_id("done")).to_contain_text("All done")
    live = Vote.objects.filter(undone_at__isnull=True).order_by("created_at")
    assert [v.choice for v in live] == ["left", "right", "tie", "left", "tie"]
    assert Vote.objects.filter(undone_at__isnull=False).count() == 1

    # An annotator has no results page; a member does.
    response = page.goto(f"{live_server.url}/teams/{team.slug}/campaigns/{campaign.pk}/")
    assert response.status == 403
    page.context.clear_cookies()
    login(page, live_server.url, "bob", f"/teams/{team.slug}/campaigns/{campaign.pk}/")
    page.wait_for_url(f"**/campaigns/{campaign.pk}/")
    counts = page.get_by_test_id("pair-counts")
    expected = expected_counts(campaign)
    assert sum(expected.values()) == 5 and expected["tie"] == 2
    expect(counts).to_have_attribute("data-win", str(expected["win"]))
    expect(counts).to_have_attribute("data-tie", str(expected["tie"]))
    expect(counts).to_have_attribute("data-lose", str(expected["lose"]))
    expect(counts).to_contain_text(f"Tie {expected['tie']} · 40.0 %")
    expect(page.get_by_test_id("total-votes")).to_have_text("5")
    expect(page.get_by_test_id("annotators")).to_contain_text("carol")


def test_a_member_closes_the_campaign_while_an_annotator_is_voting(
    live_server, browser, team_with_campaign
):
    from webapp.annotation.models import Vote

    team, campaign, _ = team_with_campaign
    contexts = [browser.new_context(), browser.new_context()]
    try:
        _close_while_voting(live_server.url, team, campaign, *(c.new_page() for c in contexts))
    finally:
        for context in contexts:
            context.close()
    assert Vote.objects.count() == 1


def _close_while_voting(base_url: str, team, campaign, annotator, member) -> None:
    login(annotator, base_url, "carol", f"/teams/{team.slug}/annotate/{campaign.pk}/")
    annotator.wait_for_url("**/annotate/items/**")
    annotator.keyboard.press("1")
    expect(annotator.get_by_test_id("progress")).to_have_text("1 / 5")

    results = f"/teams/{team.slug}/campaigns/{campaign.pk}/"
    login(member, base_url, "bob", results)
    member.wait_for_url(f"**{results}")
    member.get_by_test_id("campaign-close").click()
    expect(member.get_by_test_id("campaign-state")).to_contain_text("the results below are final")
    expect(member.get_by_test_id("campaign-reopen")).to_be_visible()

    # The annotator's open page still shows an item; the vote is refused, and the screen
    # turns into the closed notice.
    annotator.keyboard.press("3")
    expect(annotator.get_by_test_id("closed")).to_contain_text("This campaign is closed")
    expect(annotator.get_by_test_id("closed")).to_contain_text("You voted on 1 of the 5")
