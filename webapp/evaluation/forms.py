"""The form for a new evaluation: which prompts, which systems."""

from __future__ import annotations

from django import forms
from django.db.models import Exists, OuterRef

from webapp.evaluation import actions
from webapp.evaluation.actions import (
    DEFAULT_NEW_TOKENS,
    MAX_NEW_TOKENS,
    TOKENS_KEY,
    response_tokens,
)
from webapp.evaluation.models import Evaluation, PromptChoice
from webapp.jobs import references
from webapp.jobs.models import Checkpoint, Job
from webapp.promptsets import contamination
from webapp.promptsets.models import PromptSet
from webapp.teachers.models import TeacherEndpoint

MAX_PATHS = 8


class JobChoices(forms.ModelMultipleChoiceField):
    def label_from_instance(self, job: Job) -> str:
        return f"{job.name} ({job.get_method_display()}, {job.get_status_display().lower()})"


class CheckpointChoices(forms.ModelMultipleChoiceField):
    def label_from_instance(self, checkpoint: Checkpoint) -> str:
        return f"{checkpoint.job.name} · step {checkpoint.step}"


class PromptSetChoice(forms.ModelChoiceField):
    def label_from_instance(self, prompt_set: PromptSet) -> str:
        """The set's name, and a warning when its held-out prompts also occur in its
        training split (what its own jobs trained on)."""
        found = contamination.of_split(prompt_set)
        leaked = found["exact"] + found["near"]
        if not leaked:
            return prompt_set.name
        return (
            f"{prompt_set.name} (warning: {leaked} of its {found['checked']} held-out prompts "
            "also occur in its training split)"
        )


class EvaluationForm(forms.Form):
    name = forms.CharField(max_length=200)
    prompt_set = PromptSetChoice(
        queryset=PromptSet.objects.none(),
        help_text="A set whose held-out prompts its jobs also trained on is marked: scores on "
        "them measure recall, not generalisation. Choose its split again without duplicates.",
    )
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
        help_text="One per line: a Hugging Face id (org/name), one of the team's checkpoints "
        "(checkpoint:ID) or a registered model (model:NAME).",
    )
    max_new_tokens = forms.IntegerField(
        label="Max new tokens",
        initial=DEFAULT_NEW_TOKENS,
        min_value=1,
        max_value=MAX_NEW_TOKENS,
        help_text="By default the largest max_response_tokens of the chosen jobs "
        "(their students were trained to answer within it).",
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
        self.team = team
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
        self._default_tokens_from_jobs()

    def _default_tokens_from_jobs(self) -> None:
        """Max new tokens from the jobs the form starts with (?job=ID from a job's page),
        and, for static/js/pages.js to follow the boxes ticked, each job's and
        checkpoint's max_response_tokens."""
        jobs = self.fields["jobs"].queryset  # type: ignore[attr-defined]
        checkpoints = Checkpoint.objects.filter(job__team=self.team)
        per_job = {
            pk: response_tokens(value)
            for pk, value in jobs.values_list("pk", f"config__{TOKENS_KEY}")
        }
        self.response_tokens = {
            "jobs": per_job,
            "checkpoints": {
                pk: response_tokens(value)
                for pk, value in checkpoints.values_list("pk", f"job__config__{TOKENS_KEY}")
            },
            "fallback": DEFAULT_NEW_TOKENS,
            "follow": not self.is_bound,  # a value the user sent back stays theirs
        }
        # Several jobs: the largest, so that no student is cut shorter than it was trained.
        chosen = [per_job[pk] for pk in self.initial.get("jobs") or [] if pk in per_job]
        self.fields["max_new_tokens"].initial = max(chosen, default=DEFAULT_NEW_TOKENS)

    def clean_model_paths(self) -> list[str]:
        paths = [p.strip() for p in self.cleaned_data["model_paths"].splitlines() if p.strip()]
        if len(paths) > MAX_PATHS:
            raise forms.ValidationError(f"At most {MAX_PATHS} other models.")
        for path in paths:
            try:
                references.check(path, self.team, "model_paths")
            except references.InvalidReference as refused:
                raise forms.ValidationError(refused.message) from None
        return paths

    def clean(self):
        data = super().clean()
        self.systems = self._systems(data)
        if not self.errors and len({s.identity for s in self.systems}) < 2:
            raise forms.ValidationError(
                "Choose at least two different systems: jobs, checkpoints, the teacher or "
                "other models."
            )
        return data

    def create(self, user) -> Evaluation:
        """The evaluation this valid form describes (the page's and the API's one way)."""
        data = self.cleaned_data
        return actions.create_evaluation(
            self.team,
            user,
            name=data["name"],
            prompt_set=data["prompt_set"],
            prompt_choice=data["prompt_choice"],
            systems=self.systems,
            max_new_tokens=data["max_new_tokens"],
            temperature=data["temperature"],
            limit=data["limit"],
            other_sets=data["other_sets"],
            auto_judge=data["auto_judge"],
        )

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
        specs += [actions.model_system(p) for p in data.get("model_paths") or []]
        return specs
