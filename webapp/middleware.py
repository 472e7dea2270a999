"""Refuse oversized request bodies before Django reads them (uploads are bounded)."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string

# Room for the multipart envelope and the form's other fields.
SLACK_BYTES = 64 * 1024


class UploadLimitMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        limit = settings.GAD_MAX_UPLOAD_MB * 1024 * 1024
        if length > limit + SLACK_BYTES:
            detail = (
                f"The upload is {length / 1024 / 1024:.1f} MB, over the "
                f"{settings.GAD_MAX_UPLOAD_MB} MB limit (GAD_MAX_UPLOAD_MB); split the file "
                "or ask an administrator to raise the limit."
            )
            if request.path.startswith("/api/"):
                return JsonResponse({"error": "too_large", "detail": detail}, status=413)
            html = render_to_string("413.html", {"detail": detail}, request=request)
            return HttpResponse(html, status=413)
        return self.get_response(request)
