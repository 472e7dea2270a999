"""Teacher endpoint pages: list, create, detail + edit, delete, test connection, status."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django.views.decorators.http import require_GET, require_POST

from webapp import dispatch
from webapp.lib import crypto
from webapp.lib.pages import AuthenticatedRequest
from webapp.nodes import presence
from webapp.teachers import actions
from webapp.teachers.models import ReasoningEffort, TeacherEndpoint, TemperatureMode, TokenParam
from webapp.teachers.params import (
    EXTRA_BODY_BYTES,
    EXTRA_BODY_KEYS,
    LIMIT_RULES,
    PRICE_FIELDS,
    RULES,
)
from webapp.teams import access

PARAM_HELP = {
    name: f"Blank: the server's default. Otherwise {rule[3]}." for name, rule in RULES.items()
}


class TeacherForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="How the team will recognise it.")
    base_url = forms.CharField(
        label="Base URL",
        max_length=500,
        help_text="Where the OpenAI-compatible API starts, usually ending in /v1, "
        "e.g. https://api.openai.com/v1.",
    )
    model = forms.CharField(max_length=200, help_text="The model name the API expects.")
    api_key = forms.CharField(
        label="API key",
        required=False,
        max_length=actions.MAX_KEY_LENGTH,
        # Never rendered back, not even after a validation error.
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Stored encrypted; pages only ever show its last 4 characters. "
        "Leave blank for servers that need none.",
    )
    temperature = forms.CharField(
        required=False, max_length=40, help_text=PARAM_HELP["temperature"]
    )
    top_p = forms.CharField(
        label="Top p", required=False, max_length=40, help_text=PARAM_HELP["top_p"]
    )
    max_tokens = forms.CharField(
        label="Max tokens", required=False, max_length=40, help_text=PARAM_HELP["max_tokens"]
    )
    seed = forms.CharField(required=False, max_length=40, help_text=PARAM_HELP["seed"])
    token_param = forms.ChoiceField(
        label="Token parameter",
        required=False,
        choices=TokenParam.choices,
        initial=TokenParam.AUTO,
        help_text="How the answer budget is sent. OpenAI's reasoning models (GPT-5, the "
        "o-series) refuse max_tokens; Test connection finds out.",
    )
    temperature_mode = forms.ChoiceField(
        label="Temperature",
        required=False,
        choices=TemperatureMode.choices,
        initial=TemperatureMode.AUTO,
        help_text="Reasoning models accept only their default temperature.",
    )
    reasoning_effort = forms.ChoiceField(
        label="Reasoning effort",
        choices=ReasoningEffort.choices,
        required=False,
        help_text="Reasoning models only: less effort leaves more of the budget to the answer.",
    )
    extra_body = forms.CharField(
        label="Vendor options (JSON)",
        required=False,
        max_length=EXTRA_BODY_BYTES,
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": '{"top_k": 20}'}),
        help_text="Sent with every request. Allowed: " + ", ".join(sorted(EXTRA_BODY_KEYS)) + ".",
    )
    requests_per_minute = forms.CharField(
        label="Requests per minute",
        required=False,
        max_length=20,
        help_text="One limit for every job, evaluation and judge run on this endpoint, on "
        "every worker. Blank: none of ours (the provider's rate-limit headers and 429s are "
        "always honoured).",
    )
    tokens_per_minute = forms.CharField(
        label="Tokens per minute", required=False, max_length=20, help_text="Blank: no limit."
    )
    concurrency = forms.CharField(
        label="Requests in flight",
        required=False,
        max_length=20,
        initial=16,
        help_text="At once, over all workers (default 16).",
    )

    price_input = forms.CharField(
        label="Input price ($ per million tokens)",
        required=False,
        max_length=20,
        help_text="Blank: the site's default for the model, if an administrator set one.",
    )
    price_output = forms.CharField(
        label="Output price ($ per million tokens)",
        required=False,
        max_length=20,
        help_text="Reasoning tokens are billed as output.",
    )
    price_cached_input = forms.CharField(
        label="Cached input price ($ per million tokens)",
        required=False,
        max_length=20,
        help_text="Blank: billed as input.",
    )

    def params(self) -> dict[str, str]:
        # Strings as typed: actions.clean_params checks them for pages and API alike.
        return {name: self.cleaned_data[name] for name in RULES if self.cleaned_data.get(name)}

    def dialect(self) -> dict[str, str | None]:
        """The dialect settings sent; one left out (a script posting the older form)
        stays as it is, or its default."""
        sent = {name: self.cleaned_data.get(name) for name in actions.DIALECT_CHOICES}
        for name in ("token_param", "temperature_mode"):
            sent[name] = sent[name] or None
        if "reasoning_effort" not in self.data:
            sent["reasoning_effort"] = None
        sent["extra_body"] = (
            self.cleaned_data.get("extra_body") if "extra_body" in self.data else None
        )
        return sent

    def limits(self) -> dict[str, str]:
        """The limits sent, as typed (actions checks them); one left out is unchanged."""
        names = [*LIMIT_RULES, *PRICE_FIELDS]
        return {name: self.cleaned_data.get(name, "") for name in names if name in self.data}

    def show_error(self, exc: actions.InvalidField) -> None:
        field = exc.field.removeprefix("params.").split(".")[0]
        self.add_error(field if field in self.fields else None, str(exc))


class EditTeacherForm(TeacherForm):
    remove_key = forms.BooleanField(
        label="Remove the stored key",
        required=False,
        widget=forms.CheckboxInput(attrs={"style": "width:auto"}),
    )

    def __init__(self, *args: Any, endpoint: TeacherEndpoint, **kwargs: Any):
        kwargs["initial"] = {
            "name": endpoint.name,
            "base_url": endpoint.base_url,
            "model": endpoint.model,
            **{name: endpoint.params.get(name, "") for name in RULES},
            **{name: getattr(endpoint, name) for name in actions.DIALECT_CHOICES},
            "extra_body": json.dumps(endpoint.extra_body) if endpoint.extra_body else "",
            **{name: getattr(endpoint, name) or "" for name in LIMIT_RULES},
            **{
                name: "" if getattr(endpoint, name) is None else getattr(endpoint, name)
                for name in PRICE_FIELDS
            },
        }
        super().__init__(*args, **kwargs)
        key = self.fields["api_key"]
        if endpoint.has_key:
            key.help_text = f"Leave blank to keep the stored key ({endpoint.api_key_hint})."
        else:
            key.help_text = "No key is stored. Enter one if the server needs it."
            del self.fields["remove_key"]


def _posts_a_key(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """For views whose form carries the API key: keep it out of every error report."""

    @functools.wraps(view)
    @sensitive_post_parameters("api_key")
    def wrapper(request: AuthenticatedRequest, *args, **kwargs) -> HttpResponse:
        crypto.hide_key_in_error_reports(request)
        return view(request, *args, **kwargs)

    return wrapper


def _endpoint(request: AuthenticatedRequest, slug: str, pk: int) -> TeacherEndpoint:
    return access.team_object(
        request, slug, TeacherEndpoint.objects.select_related("team", "created_by"), pk
    )


@login_required
@require_GET
def teachers(request: AuthenticatedRequest, slug: str) -> HttpResponse:
    team = access.working_team(request, slug)
    rows = TeacherEndpoint.objects.filter(team=team).order_by("name")
    return render(request, "teachers/list.html", {"team": team, "teachers": rows})


@login_required
@_posts_a_key
@sensitive_variables("data")
def teacher_create(request: AuthenticatedRequest, slug: str) -> HttpResponse:
    team = access.working_team(request, slug)
    form = TeacherForm(request.POST if request.method == "POST" else None)
    if form.is_bound and form.is_valid():
        data = form.cleaned_data
        try:
            endpoint = actions.create_endpoint(
                team,
                request.user,
                name=data["name"],
                base_url=data["base_url"],
                model=data["model"],
                api_key=data["api_key"],
                params=form.params(),
                dialect=form.dialect(),
                limits=form.limits(),
            )
        except actions.InvalidField as exc:
            form.show_error(exc)
        else:
            messages.success(request, f"Teacher {endpoint.name} saved. Test its connection.")
            return redirect("teacher", slug=team.slug, pk=endpoint.pk)
    status = 422 if form.is_bound else 200
    return render(request, "teachers/create.html", {"team": team, "form": form}, status=status)


@login_required
@_posts_a_key
@sensitive_variables("data")
def teacher_detail(request: AuthenticatedRequest, slug: str, pk: int) -> HttpResponse:
    endpoint = _endpoint(request, slug, pk)
    bound = request.POST if request.method == "POST" else None
    form = EditTeacherForm(bound, endpoint=endpoint)
    if form.is_bound and form.is_valid():
        data = form.cleaned_data
        had_key = endpoint.has_key
        try:
            endpoint = actions.update_endpoint(
                endpoint,
                name=data["name"],
                base_url=data["base_url"],
                model=data["model"],
                params=form.params(),
                api_key=data["api_key"],
                remove_key=data.get("remove_key", False),
                dialect=form.dialect(),
                limits=form.limits(),
            )
        except actions.InvalidField as exc:
            form.show_error(exc)
        else:
            messages.success(request, f"Teacher {endpoint.name} saved.")
            if had_key and not endpoint.has_key and not data.get("remove_key"):
                messages.warning(
                    request,
                    "The API key was removed: it was entered for another address than the "
                    "new base URL. Enter the key again for this address.",
                )
            return redirect("teacher", slug=endpoint.team.slug, pk=endpoint.pk)
    status = 422 if form.is_bound else 200
    context = {"team": endpoint.team, "endpoint": endpoint, "form": form}
    context["waiting"] = _waiting(endpoint)
    return render(request, "teachers/detail.html", context, status=status)


def _waiting(endpoint: TeacherEndpoint) -> str | None:
    """While a test is pending: why no worker will run it, if none reads its queue."""
    if endpoint.test_status != "pending":
        return None
    return presence.queue_problem(dispatch.queue_of(actions.TEST_TASK))


@login_required
@require_POST
def teacher_delete(request: AuthenticatedRequest, slug: str, pk: int) -> HttpResponse:
    endpoint = _endpoint(request, slug, pk)
    try:
        actions.delete_endpoint(endpoint)
    except actions.InUse as exc:
        messages.error(request, str(exc))
        return redirect("teacher", slug=endpoint.team.slug, pk=endpoint.pk)
    messages.success(request, f"Teacher {endpoint.name} deleted.")
    return redirect("teachers", slug=endpoint.team.slug)


@login_required
@require_POST
def teacher_test(request: AuthenticatedRequest, slug: str, pk: int) -> HttpResponse:
    endpoint = _endpoint(request, slug, pk)
    if not actions.request_test(endpoint):
        messages.info(request, "A test of this teacher is already running.")
    return redirect("teacher", slug=endpoint.team.slug, pk=endpoint.pk)


@login_required
@require_GET
def teacher_status(request: AuthenticatedRequest, slug: str, pk: int) -> JsonResponse:
    """The last test's result, polled by the detail page while a test is pending."""
    endpoint = _endpoint(request, slug, pk)
    return JsonResponse({**endpoint.last_test(), "waiting": _waiting(endpoint)})


# ----------------------------------------------------------------------------- trackers


def _secret(label: str) -> forms.CharField:
    return forms.CharField(
        label=label,
        required=False,
        max_length=actions.MAX_KEY_LENGTH,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )


def _remove(label: str) -> forms.BooleanField:
    return forms.BooleanField(
        label=label, required=False, widget=forms.CheckboxInput(attrs={"style": "width:auto"})
    )


class TrackersForm(forms.Form):
    wandb_entity = forms.CharField(label="W&B entity", required=False, max_length=100)
    wandb_base_url = forms.CharField(label="W&B server", required=False, max_length=500)
    wandb_api_key = _secret("W&B API key")
    remove_wandb_key = _remove("Remove the stored W&B key")
    mlflow_tracking_uri = forms.CharField(
        label="MLflow tracking URI", required=False, max_length=500
    )
    mlflow_token = _secret("MLflow token")
    remove_mlflow_token = _remove("Remove the stored MLflow token")

    def __init__(self, *args: Any, account, **kwargs: Any):
        kwargs["initial"] = {
            "wandb_entity": account.wandb_entity,
            "wandb_base_url": account.wandb_base_url,
            "mlflow_tracking_uri": account.mlflow_tracking_uri,
        }
        super().__init__(*args, **kwargs)
        for key, hint, remove in (
            ("wandb_api_key", account.wandb_key_hint, "remove_wandb_key"),
            ("mlflow_token", account.mlflow_token_hint, "remove_mlflow_token"),
        ):
            if hint:
                self.fields[key].help_text = f"Leave blank to keep the stored one ({hint})."
            else:
                self.fields[key].help_text = "None is stored."
                del self.fields[remove]


@login_required
@sensitive_post_parameters("wandb_api_key", "mlflow_token")
@sensitive_variables("data")
def trackers(request: AuthenticatedRequest, slug: str) -> HttpResponse:
    """The team's own W&B and MLflow accounts, which the worker syncs its runs to."""
    crypto.hide_key_in_error_reports(request)
    team = access.working_team(request, slug)
    account = actions.tracker_account(team)
    form = TrackersForm(request.POST if request.method == "POST" else None, account=account)
    if form.is_bound and form.is_valid():
        try:
            actions.save_trackers(team, **form.cleaned_data)
        except actions.InvalidField as exc:
            form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        else:
            messages.success(request, "Tracker accounts saved.")
            return redirect("trackers", slug=team.slug)
    status = 422 if form.is_bound else 200
    context = {"team": team, "form": form, "account": account}
    return render(request, "teachers/trackers.html", context, status=status)
