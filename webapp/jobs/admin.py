from django.contrib import admin

from webapp.jobs.models import Job


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["name", "team", "method", "status", "step", "total_steps", "created_at"]
    list_filter = ["status", "method", "team"]
    search_fields = ["name", "team__name"]
    readonly_fields = ["created_at", "started_at", "finished_at"]
