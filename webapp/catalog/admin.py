from django import forms
from django.contrib import admin

from webapp.catalog.models import RegisteredModel, model_roots, under_roots


class RegisteredModelForm(forms.ModelForm):
    class Meta:
        model = RegisteredModel
        fields = ["name", "path", "description", "teams"]

    def clean_path(self) -> str:
        path = self.cleaned_data["path"].strip()
        if not under_roots(path):
            roots = ", ".join(map(str, model_roots())) or "none set"
            raise forms.ValidationError(
                f"Not under a model root (GAD_MODEL_ROOTS: {roots}); put the model there, "
                "or ask the site's operator to add its directory."
            )
        return path


@admin.register(RegisteredModel)
class RegisteredModelAdmin(admin.ModelAdmin):
    form = RegisteredModelForm
    list_display = ["name", "path", "description", "created_at"]
    search_fields = ["name", "path", "description"]
    filter_horizontal = ["teams"]
