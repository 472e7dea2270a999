"""Admin: the site's default prices per model (endpoints without a price of their own)."""

from __future__ import annotations

from django.contrib import admin

from webapp.teachers.models import ModelPrice


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    list_display = [
        "model",
        "price_input",
        "price_output",
        "price_cached_input",
        "note",
        "updated_at",
    ]
    search_fields = ["model"]
