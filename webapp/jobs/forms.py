"""The launch form. Its "Advanced" fields are generated from `trainer.config`, the single
source of truth for keys, defaults, help texts and limits; validation is
`trainer.config.validate_dict`, so the page, the API and the CLI accept the same configs.
"""

from __future__ import annotations

import typing
from typing import Any

from django import forms

from trainer import config as trainer_config
from webapp.jobs import references
from webapp.jobs.configs import MANAGED_KEYS, build_configs, teacher_problem
from webapp.promptsets.models import PromptSet
from webapp.teachers.models import TeacherEndpoint

METHODS = [
    ("gad", "GAD"),
    ("seqkd", "SeqKD"),
    ("pair", "GAD + SeqKD pair (same prompts and budget)"),
]


def field_name(key: str) -> str:
    return "cfg__" + key.replace(".", "__")


def _form_field(spec: dict[str, Any]) -> forms.Field:
    tp = spec["type"]
    args = typing.get_args(tp)
    optional = type(None) in args
    if optional:
        tp = next(a for a in args if a is not type(None))
    common = {"label": spec["key"], "help_text": spec.get("help", ""), "required": False}
    default = spec["default"]
    if spec.get("choices"):
        return forms.ChoiceField(
            choices=[(c, c) for c in spec["choices"]], initial=default, **common
        )
    if tp is bool:
        return forms.BooleanField(initial=default, **common)
    if tp is int:
        return forms.IntegerField(initial=default, **common)
    if tp is float:
        return forms.FloatField(initial=default, **common)
    if typing.get_origin(tp) is list:
        return forms.CharField(initial=", ".join(default or []), **common)
    return forms.CharField(initial=default, **common)


def advanced_specs() -> list[dict[str, Any]]:
    return [s for s in trainer_config.field_specs() if s["key"] not in MANAGED_KEYS]


class LaunchForm(forms.Form):
    name = forms.CharField(max_length=200)
    method = forms.ChoiceField(choices=METHODS, initial="gad")
    prompt_set = forms.ModelChoiceField(queryset=PromptSet.objects.none())
    teacher = forms.ModelChoiceField(
        queryset=TeacherEndpoint.objects.none(),
        required=False,
        help_text="Required when some training prompts have no teacher answer yet.",
    )
    student = forms.CharField(
        max_length=500,
        help_text="A Hugging Face id (e.g. Qwen/Qwen2.5-3B-Instruct), one of the team's "
        "checkpoints (checkpoint:ID) or a registered model (model:NAME): pick one from the list.",
    )
    gpus = forms.IntegerField(
        min_value=0,
        max_value=64,
        initial=1,
        label="GPUs per node",
        help_text="0 runs on a CPU worker. More than 1, or more than one node (nodes, under "
        "Advanced): one data-parallel process per GPU (the batch size must be a multiple "
        "of the GPUs of all nodes).",
    )
    use_lora = forms.BooleanField(required=False, label="Train with LoRA adapters (peft)")
    teacher_batch = forms.BooleanField(
        required=False,
        label="Collect teacher answers through the Batch API (OpenAI: half the price, "
        "within 24 hours)",
    )
    guard = forms.ChoiceField(
        choices=[
            ("off", "Off: only show the alarm"),
            ("pause", "Pause the job"),
            ("stop", "Stop the job"),
        ],
        initial="off",
        required=False,
        label="When a health alarm fires",
        help_text="Discriminator winning outright or not learning, answers growing without "
        "bound, non-finite losses: the banners on the job page. Pause keeps the job for you "
        "to resume; both save a checkpoint first.",
    )

    def __init__(self, team, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.team = team
        # The references the team can pick (its checkpoints, registered models); a hub id
        # is typed instead.
        self.student_choices = references.choices(team)
        self.fields["student"].widget.attrs["list"] = "student-choices"
        self.fields["prompt_set"].queryset = PromptSet.objects.filter(team=team)
        self.fields["teacher"].queryset = TeacherEndpoint.objects.filter(team=team)
        self.advanced = []
        for spec in advanced_specs():
            name = field_name(spec["key"])
            self.fields[name] = _form_field(spec)
            self.advanced.append(name)

    def advanced_fields(self):
        return [self[name] for name in self.advanced]

    def clean(self):
        data = super().clean()
        problem = teacher_problem(data.get("prompt_set"), data.get("teacher"))
        if problem:
            self.add_error("teacher", problem)
        if data.get("student") and data.get("method"):
            nested = config_from_fields(data, self.advanced, data.get("use_lora", False))
            gpus = data.get("gpus") or 0
            self.spec, errors = build_configs(
                self.team, data["method"], data["student"], nested, gpus
            )
            data["student"] = data["student"].strip()
            for key, message in errors:
                if key == "student":
                    self.add_error("student", message.removeprefix("student: "))
                    continue
                self.add_error(field_name(key) if field_name(key) in self.fields else None, message)
        return data


def config_from_fields(data: dict, names: list[str], use_lora: bool) -> dict:
    """Nested config dict from the flat advanced fields (blank fields keep the default)."""
    specs = {field_name(s["key"]): s for s in advanced_specs()}
    nested: dict[str, Any] = {}
    for name in names:
        spec = specs[name]
        value = data.get(name)
        if spec["key"].startswith("lora.") and not use_lora:
            continue
        if value in (None, "") and not isinstance(value, bool):
            value = spec["default"]
        if typing.get_origin(spec["type"]) is list and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        node = nested
        *parents, leaf = spec["key"].split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    if not use_lora:
        nested["lora"] = None
    return nested


def initial_from_config(config: dict) -> dict:
    """Form initial values from a stored job config ("run again with changes")."""
    initial = {}
    for spec in advanced_specs():
        node: Any = config
        for part in spec["key"].split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is None and spec["default"] is not None:
            continue
        if isinstance(node, list):
            node = ", ".join(node)
        initial[field_name(spec["key"])] = node
    initial["use_lora"] = bool(config.get("lora"))
    return initial
