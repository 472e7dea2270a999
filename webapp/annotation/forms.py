"""Forms for a new annotation campaign and a vote."""

from __future__ import annotations

from django import forms
from django.contrib.auth import get_user_model

from webapp.annotation import actions
from webapp.annotation.models import Choice
from webapp.evaluation.models import Evaluation, System
from webapp.teams.models import Role


def pair_value(a: System, b: System) -> str:
    return f"{a.pk}:{b.pk}"


class CampaignForm(forms.Form):
    title = forms.CharField(
        max_length=200,
        help_text="Annotators see it: name neither the systems nor the method.",
    )
    pairs = forms.MultipleChoiceField(
        choices=(),
        widget=forms.CheckboxSelectMultiple,
        help_text="Results are stated from the first system's side (wins / ties / losses).",
    )
    annotators = forms.ModelMultipleChoiceField(
        queryset=get_user_model().objects.none(),
        widget=forms.CheckboxSelectMultiple,
        help_text="The team's annotators are chosen by default (you, when it has none).",
    )
    overlap = forms.IntegerField(
        label="Annotators per item",
        initial=2,
        min_value=1,
        max_value=actions.MAX_OVERLAP,
        help_text="At most the number of people chosen above. 2 or more measures "
        "agreement (Cohen's κ, Fleiss' κ).",
    )
    seed = forms.IntegerField(
        required=False, min_value=0, help_text="Blank: random. Fixes sides and assignments."
    )

    def __init__(self, evaluation: Evaluation, *args, creator=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.evaluation = evaluation
        systems = list(evaluation.systems.select_related("job"))
        self.systems = {s.pk: s for s in systems}
        defaults = actions.default_pairs(systems)
        choices = [(pair_value(a, b), f"{a.name}  vs  {b.name}") for a, b in defaults]
        seen = {frozenset((a.pk, b.pk)) for a, b in defaults}
        for i, a in enumerate(systems):
            for b in systems[i + 1 :]:
                if frozenset((a.pk, b.pk)) not in seen:
                    choices.append((pair_value(a, b), f"{a.name}  vs  {b.name}"))
        pair_field = self.fields["pairs"]
        assert isinstance(pair_field, forms.MultipleChoiceField)
        pair_field.choices = choices
        self.fields["pairs"].initial = [v for v, _ in choices[: max(1, len(defaults))]]
        team = evaluation.team
        people = get_user_model().objects.filter(memberships__team=team).order_by("username")
        people_field = self.fields["annotators"]
        assert isinstance(people_field, forms.ModelMultipleChoiceField)
        people_field.queryset = people
        # One filter() call: team and role must hold for the same membership row.
        annotators = get_user_model().objects.filter(
            memberships__team=team, memberships__role=Role.ANNOTATOR
        )
        chosen = list(annotators.values_list("pk", flat=True))
        if not chosen and creator is not None and people.filter(pk=creator.pk).exists():
            chosen = [creator.pk]
        self.fields["annotators"].initial = chosen
        self.fields["overlap"].initial = max(1, min(2, len(chosen)))
        self.fields["overlap"].widget.attrs["max"] = max(1, len(chosen))  # pages.js follows
        self.fields[
            "title"
        ].initial = f"Which answer is better? (set {evaluation.campaigns.count() + 1})"

    def clean(self):
        data = super().clean()
        people, overlap = data.get("annotators"), data.get("overlap")
        if people is not None and overlap is not None and overlap > len(people):
            chosen = f"{len(people)} {'person is' if len(people) == 1 else 'people are'}"
            self.add_error(
                "overlap",
                f"Annotators per item is {overlap}, but only {chosen} chosen under "
                f"Annotators: lower it to {len(people)} or choose more people.",
            )
        return data

    def create(self, user):
        """The campaign this valid form describes (the page's and the API's one way)."""
        data = self.cleaned_data
        return actions.create_campaign(
            self.evaluation,
            user,
            title=data["title"],
            pairs=data["pairs"],
            annotators=list(data["annotators"]),
            overlap=data["overlap"],
            seed=data["seed"],
        )

    def clean_pairs(self) -> list[tuple[System, System]]:
        pairs = []
        for value in self.cleaned_data["pairs"]:
            a, b = (int(x) for x in value.split(":"))
            pairs.append((self.systems[a], self.systems[b]))
        return pairs


class VoteForm(forms.Form):
    choice = forms.ChoiceField(choices=Choice.choices)
    comment = forms.CharField(required=False, max_length=2000)
