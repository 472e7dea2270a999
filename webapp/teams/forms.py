"""The team forms the pages and the API share."""

from __future__ import annotations

from django import forms
from django.contrib.auth import get_user_model
from django.db.models import Q

from webapp.teams.models import Role


class MemberForm(forms.Form):
    user = forms.CharField(label="Username or e-mail", max_length=150)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MEMBER)

    def clean_user(self):
        value = self.cleaned_data["user"].strip()
        user = get_user_model().objects.filter(Q(username=value) | Q(email__iexact=value)).first()
        if user is None:
            raise forms.ValidationError(
                f"No user named {value!r}; they must have an account first."
            )
        return user
