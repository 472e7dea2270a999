"""Prompt set pages: list + upload, detail with stats and preview, split, download, delete."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from webapp.lib.errors import ActionError
from webapp.lib.pages import AuthenticatedRequest
from webapp.promptsets import actions, contamination
from webapp.promptsets.answers import collected, count_collected
from webapp.promptsets.export import jsonl_lines
from webapp.promptsets.ingest import UploadRejected, stage
from webapp.promptsets.models import PromptSet, Upload, UploadStatus
from webapp.teams import access


class UploadForm(forms.Form):
    name = forms.CharField(max_length=200, required=False, help_text="Defaults to the file name.")
    # Empty files reach the parser, which says so in the same words as for the API.
    file = forms.FileField(allow_empty_file=True, help_text="JSONL, CSV with a header, or Parquet.")
    drop_duplicates = forms.BooleanField(
        required=False,
        label="Drop duplicate prompts",
        help_text="Leave out a prompt whose text (case, spacing and punctuation aside) "
        "repeats an earlier one.",
    )


class SplitForm(forms.Form):
    num_test = forms.IntegerField(min_value=0, label="Prompts to hold out as a test set")
    seed = forms.IntegerField(min_value=0, initial=0, required=False)
    dedupe = forms.BooleanField(
        required=False,
        initial=True,
        label="Only prompts without duplicates",
        help_text="Hold out only prompts with no exact or near duplicate in the set, so that "
        "none is also trained on.",
    )


@login_required
def prompt_sets(request: AuthenticatedRequest, slug: str) -> HttpResponse:
    team = access.working_team(request, slug)
    form = UploadForm()
    status = 200
    problems: list[str] = []
    if request.method == "POST":
        # Oversized bodies never get here: UploadLimitMiddleware answers 413 first.
        form = UploadForm(request.POST, request.FILES)
        if form.is_valid():
            try:
                upload = stage(
                    team,
                    request.user,
                    form.cleaned_data["name"],
                    form.cleaned_data["file"],
                    form.cleaned_data["drop_duplicates"],
                )
            except UploadRejected as rejected:
                form.add_error("file", rejected.message)
                problems = rejected.problems
                status = rejected.status
            else:
                return redirect("prompt-set-upload", slug=team.slug, pk=upload.pk)
        else:
            status = 422
    sets = PromptSet.objects.filter(team=team)
    importing = Upload.objects.filter(
        team=team, status__in=[UploadStatus.QUEUED, UploadStatus.READING]
    )
    context = {
        "team": team,
        "prompt_sets": sets,
        "form": form,
        "problems": problems,
        "importing": importing,
    }
    return render(request, "promptsets/list.html", context, status=status)


@login_required
def upload_detail(request: AuthenticatedRequest, slug: str, pk: int) -> HttpResponse:
    """An upload being checked and imported by a worker: its progress, then its prompt set
    or its problems."""
    upload = access.team_object(request, slug, Upload, pk)
    if upload.status == UploadStatus.DONE and upload.prompt_set_id:
        messages.success(request, f"Imported {upload.records_read:,} prompts into {upload.name}.")
        return redirect("prompt-set", slug=slug, pk=upload.prompt_set_id)
    return render(
        request,
        "promptsets/upload.html",
        {"team": upload.team, "upload": upload, **state(upload)},
        status=422 if upload.status == UploadStatus.FAILED else 200,  # refused, with why
    )


@login_required
@require_GET
def upload_status(request: AuthenticatedRequest, slug: str, pk: int) -> JsonResponse:
    return JsonResponse(state(access.team_object(request, slug, Upload, pk)))


def state(upload: Upload) -> dict:
    """What the upload page shows and polls."""
    done = upload.prompt_set_id and upload.status == UploadStatus.DONE
    return {
        "status": upload.status,
        "status_label": upload.get_status_display(),
        "records_read": upload.records_read,
        "size_bytes": upload.size_bytes,
        "error": upload.error,
        "problems": upload.problems,
        "ended": upload.ended,
        "prompt_set_url": (
            reverse("prompt-set", kwargs={"slug": upload.team.slug, "pk": upload.prompt_set_id})
            if done
            else None
        ),
    }


@login_required
def prompt_set_detail(request: AuthenticatedRequest, slug: str, pk: int) -> HttpResponse:
    prompt_set = access.team_object(request, slug, PromptSet, pk)
    team = prompt_set.team
    query = request.GET.get("q", "").strip()
    rows = prompt_set.prompts.order_by("index")
    if query:
        rows = rows.filter(text__icontains=query)
    page = Paginator(
        rows.only("index", "line", "text", "teacher_response", "split", "prompt_hash"), 20
    ).get_page(request.GET.get("page"))
    answers = collected(team, [p.prompt_hash for p in page if p.teacher_response is None])
    for prompt in page:
        prompt.collected = answers.get(prompt.prompt_hash)  # type: ignore[attr-defined]  # for the template
    histograms = {key: prompt_set.stats.get(key, {}) for key in ("prompt_chars", "answer_chars")}
    return render(
        request,
        "promptsets/detail.html",
        {
            "team": team,
            "prompt_set": prompt_set,
            "num_collected": count_collected(prompt_set),
            "page": page,
            "query": query,
            "split_form": SplitForm(initial={"num_test": prompt_set.num_test, "dedupe": True}),
            "contamination": contamination.of_split(prompt_set),
            "unique": contamination.without_duplicates(prompt_set).count(),
            "histograms": histograms,
            "jobs": prompt_set.jobs.order_by("-created_at")[:10],
        },
    )


@login_required
@require_POST
def prompt_set_split(request: AuthenticatedRequest, slug: str, pk: int) -> HttpResponse:
    prompt_set = access.team_object(request, slug, PromptSet, pk)
    team = prompt_set.team
    form = SplitForm(request.POST)
    if not form.is_valid():
        problems = [f"{name}: {' '.join(map(str, errors))}" for name, errors in form.errors.items()]
        messages.error(request, "Held-out split not changed: " + "; ".join(problems))
    else:
        try:
            updated = actions.set_test_split(
                prompt_set,
                form.cleaned_data["num_test"],
                form.cleaned_data["seed"] or 0,
                form.cleaned_data["dedupe"],
            )
        except ActionError as exc:
            messages.error(request, str(exc))
        else:
            messages.success(
                request,
                f"{updated.num_test:,} prompts held out; {updated.num_train:,} for training.",
            )
    return redirect("prompt-set", slug=team.slug, pk=prompt_set.pk)


@login_required
def prompt_set_download(request: AuthenticatedRequest, slug: str, pk: int) -> StreamingHttpResponse:
    prompt_set = access.team_object(request, slug, PromptSet, pk)
    split = request.GET.get("split") if request.GET.get("split") in ("train", "test") else None
    response = StreamingHttpResponse(
        jsonl_lines(prompt_set, split), content_type="application/x-ndjson; charset=utf-8"
    )
    suffix = f"-{split}" if split else ""
    response["Content-Disposition"] = (
        f'attachment; filename="prompt-set-{prompt_set.pk}{suffix}.jsonl"'
    )
    return response


@login_required
@require_POST
def prompt_set_delete(request: AuthenticatedRequest, slug: str, pk: int) -> HttpResponse:
    prompt_set = access.team_object(request, slug, PromptSet, pk)
    team = prompt_set.team
    try:
        actions.delete_prompt_set(prompt_set)
    except ActionError as exc:
        messages.error(request, str(exc))
        return redirect("prompt-set", slug=team.slug, pk=prompt_set.pk)
    messages.success(request, f"Deleted {prompt_set.name}.")
    return redirect("prompt-sets", slug=team.slug)
