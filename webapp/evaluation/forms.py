"""Forms for a new evaluation (which prompts, which systems) and a new campaign."""

from __future__ import annotations

import math

from django import forms
from django.contrib.auth import get_user_model
from django.db.models import Exists, OuterRef

from webapp.evaluation import actions
from webapp.evaluation.models import Choice, Evaluation, PromptChoice, System
from webapp.jobs.models import Checkpoint, Job
from webapp.promptsets.models import PromptSet
from webapp.teachers.models import TeacherEndpoint
from webapp.teams.models import Role

MAX_PATHS = 8


class JobChoices(forms.ModelMultipleChoiceField):
    def label_from_instance(self, job: Job) -> str:
        return f"{job.name} ({job.get_method_display()}, {job.get_status_display().lower()})"


class CheckpointChoices(forms.ModelMultipleChoiceField):
    def label_from_instance(self, checkpoint: Checkpoint) -> str:
        return f"{checkpoint.job.name} · step {checkpoint.step}"


class EvaluationForm(forms.Form):
    name = forms.CharField(max_length=200)
    prompt_set = forms.ModelChoiceField(queryset=PromptSet.objects.none())
    prompt_choice = forms.ChoiceField(
        label="Prompts", choices=PromptChoice.choices, initial=PromptChoice.TEST
    )
    limit = forms.IntegerField(
        label="At most this many prompts",
        required=False,
        min_value=1,
        help_text="Blank: all of them. The first ones in the file's order.",
    )
    other_sets = forms.ModelMultipleChoiceField(
        queryset=PromptSet.objects.none(),
        required=False,
        label="Other test sets",
        help_text="Each one a column of the judge's table: its held-out split if it has "
        "one, else all its prompts (at most the limit above). Ctrl/⌘-click for several.",
    )
    jobs = JobChoices(
        queryset=Job.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Jobs",
        help_text="Each job's final checkpoint (the one marked final, else the last).",
    )
    include_base = forms.BooleanField(
        label="Also each chosen job's student before distillation",
        required=False,
        initial=True,
        widget=forms.CheckboxInput(attrs={"style": "width:auto"}),
    )
    checkpoints = CheckpointChoices(
        queryset=Checkpoint.objects.none(),
        required=False,
        label="Other checkpoints",
        help_text="Ctrl/⌘-click to choose several.",
    )
    teacher = forms.ModelChoiceField(
        queryset=TeacherEndpoint.objects.none(),
        required=False,
        label="Teacher",
        empty_label="(none)",
        help_text="Its answers are asked for with the evaluation's decoding settings; "
        "tokens count against the team's quota.",
    )
    model_paths = forms.CharField(
        label="Other models",
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="One per line: a model directory on the workers, or a hub id.",
    )
    max_new_tokens = forms.IntegerField(
        label="Max new tokens", initial=1536, min_value=1, max_value=32768
    )
    auto_judge = forms.ModelChoiceField(
        queryset=TeacherEndpoint.objects.none(),
        required=False,
        label="Judge when ready",
        empty_label="(later, by hand)",
        help_text="This endpoint judges the answers as soon as they are all generated; "
        "its tokens count against the team's quota.",
    )
    temperature = forms.FloatField(
        required=False,
        min_value=0.0,
        max_value=2.0,
        help_text="Blank: greedy decoding, as in the paper.",
    )

    def __init__(self, team, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["prompt_set"].queryset = PromptSet.objects.filter(team=team)
        self.fields["other_sets"].queryset = PromptSet.objects.filter(team=team)
        with_checkpoints = Exists(Checkpoint.objects.filter(job=OuterRef("pk")))
        self.fields["jobs"].queryset = Job.objects.filter(team=team).filter(with_checkpoints)
        self.fields["checkpoints"].queryset = (
            Checkpoint.objects.filter(job__team=team)
            .select_related("job")
            .order_by("-job__created_at", "-step")
        )
        self.fields["teacher"].queryset = TeacherEndpoint.objects.filter(team=team)
        self.fields["auto_judge"].queryset = TeacherEndpoint.objects.filter(team=team)

    def clean_model_paths(self) -> list[str]:
        paths = [p.strip() for p in self.cleaned_data["model_paths"].splitlines() if p.strip()]
        if len(paths) > MAX_PATHS:
            raise forms.ValidationError(f"At most {MAX_PATHS} model paths.")
        for path in paths:
            if len(path) > 1000 or any(ord(c) < 32 for c in path):
                raise forms.ValidationError(f"Not a usable model path: {path[:80]!r}.")
        return paths

    def clean(self):
        data = super().clean()
        self.systems = self._systems(data)
        if not self.errors and len({s.identity for s in self.systems}) < 2:
            raise forms.ValidationError(
                "Choose at least two different systems: jobs, checkpoints, the teacher or "
                "model paths."
            )
        return data

    def _systems(self, data) -> list[actions.SystemSpec]:
        specs = []
        for job in data.get("jobs") or []:
            final = actions.final_checkpoint(job)
            if final is not None:
                specs.append(actions.checkpoint_system(final))
        specs += [actions.checkpoint_system(c) for c in data.get("checkpoints") or []]
        if data.get("include_base"):
            specs += [actions.base_system(job) for job in data.get("jobs") or []]
        if data.get("teacher"):
            specs.append(actions.teacher_system(data["teacher"]))
        specs += [actions.path_system(p) for p in data.get("model_paths") or []]
        return specs


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
        help_text="Annotators and members are chosen by default.",
    )
    overlap = forms.IntegerField(
        label="Annotators per item",
        initial=2,
        min_value=1,
        max_value=actions.MAX_OVERLAP,
        help_text="2 or more measures agreement (Cohen's κ, Fleiss' κ).",
    )
    seed = forms.IntegerField(
        required=False, min_value=0, help_text="Blank: random. Fixes sides and assignments."
    )

    def __init__(self, evaluation: Evaluation, *args, **kwargs):
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
        self.fields["pairs"].choices = choices
        self.fields["pairs"].initial = [v for v, _ in choices[: max(1, len(defaults))]]
        team = evaluation.team
        people = get_user_model().objects.filter(memberships__team=team).order_by("username")
        self.fields["annotators"].queryset = people
        # One filter() call: team and role must hold for the same membership row.
        voters = get_user_model().objects.filter(
            memberships__team=team, memberships__role__in=[Role.ANNOTATOR, Role.MEMBER]
        )
        self.fields["annotators"].initial = list(voters.values_list("pk", flat=True))
        self.fields[
            "title"
        ].initial = f"Which answer is better? (set {evaluation.campaigns.count() + 1})"

    def clean_pairs(self) -> list[tuple[System, System]]:
        pairs = []
        for value in self.cleaned_data["pairs"]:
            a, b = (int(x) for x in value.split(":"))
            pairs.append((self.systems[a], self.systems[b]))
        return pairs


class VoteForm(forms.Form):
    choice = forms.ChoiceField(choices=Choice.choices)
    comment = forms.CharField(required=False, max_length=2000)


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
        from webapp.evaluation import sweep

        super().__init__(*args, **kwargs)
        team = job.team
        self.fields["prompt_set"].queryset = PromptSet.objects.filter(team=team)
        self.fields["judge"].queryset = TeacherEndpoint.objects.filter(team=team)
        self.fields["prompt_set"].initial = job.prompt_set_id
        self.fields["limit"].initial = sweep.DEFAULT_PROMPTS
        self.fields["every"].initial = max(
            sweep.smallest_every(job), math.ceil(job.checkpoints.count() / 6)
        )
        endpoints = self.fields["judge"].queryset
        self.fields["judge"].initial = (
            job.teacher_id or endpoints.values_list("pk", flat=True).first()
        )
        self.fields["length_bound"].initial = sweep.default_bound(job)
