"""The forms for a checkpoint sweep and for continuing a paused judge run."""

from __future__ import annotations

import math

from django import forms

from webapp.evaluation.models import PromptChoice
from webapp.jobs.models import Job
from webapp.judging import sweep
from webapp.promptsets.models import PromptSet
from webapp.teachers.models import TeacherEndpoint


class SweepForm(forms.Form):
    every = forms.IntegerField(
        label="Every k-th checkpoint",
        min_value=1,
        max_value=100_000,
        help_text="The k-th, 2k-th, … checkpoints by step, and always the last one.",
    )
    prompt_set = forms.ModelChoiceField(queryset=PromptSet.objects.none(), label="Test prompts")
    prompt_choice = forms.ChoiceField(
        label="Which prompts", choices=PromptChoice.choices, initial=PromptChoice.TEST
    )
    limit = forms.IntegerField(
        label="At most this many prompts",
        required=False,
        min_value=1,
        max_value=5000,
        help_text="A small set keeps the sweep cheap: every point costs 2 judge calls a prompt.",
    )
    judge = forms.ModelChoiceField(
        queryset=TeacherEndpoint.objects.none(),
        help_text="Judges the answers as soon as they are generated; its tokens count "
        "against the team's quota.",
    )
    length_bound = forms.FloatField(
        label="Length bound (words)",
        required=False,
        min_value=1.0,
        help_text="The longest acceptable mean answer length; blank: no bound. You can "
        "try other bounds on the results without judging again.",
    )

    def __init__(self, job: Job, *args, **kwargs):
        super().__init__(*args, **kwargs)
        team = job.team
        sets, judges = self.fields["prompt_set"], self.fields["judge"]
        assert isinstance(sets, forms.ModelChoiceField)
        assert isinstance(judges, forms.ModelChoiceField)
        sets.queryset = PromptSet.objects.filter(team=team)
        judges.queryset = endpoints = TeacherEndpoint.objects.filter(team=team)
        self.fields["prompt_set"].initial = job.prompt_set_id
        self.fields["limit"].initial = sweep.DEFAULT_PROMPTS
        self.fields["every"].initial = max(
            sweep.smallest_every(job), math.ceil(job.checkpoints.count() / 6)
        )
        self.fields["judge"].initial = (
            job.teacher_id or endpoints.values_list("pk", flat=True).first()
        )
        self.fields["length_bound"].initial = sweep.default_bound(job)


class ContinueForm(forms.Form):
    token_cap = forms.IntegerField(
        label="New token cap",
        required=False,
        min_value=1,
        max_value=10**12,
        help_text="The run may spend this many tokens in all; blank: twice its cap.",
    )
