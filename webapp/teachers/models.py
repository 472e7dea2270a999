"""Teacher endpoints: an OpenAI-compatible API, a model name, an encrypted key, sampling."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from django.conf import settings
from django.db import models
from django.utils import timezone

KEY_MASK = "••••"


class ConnectionStatus(models.TextChoices):
    OK = "ok", "OK"
    ERROR = "error", "Error"
    PENDING = "pending", "Testing…"


class ErrorKind(models.TextChoices):
    # The scopes of trainer.teacher.TeacherError: whether trying again can help.
    TRANSIENT = "transient", "Transient (try again later)"
    PROMPT = "prompt", "Refused the test prompt"
    RUN = "run", "Unusable (fix the endpoint)"


class TokenParam(models.TextChoices):
    # trainer.teacher.Dialect.token_param; "auto": what Test connection found, else max_tokens.
    AUTO = "auto", "Automatic (found by Test connection)"
    MAX_TOKENS = "max_tokens", "max_tokens"
    MAX_COMPLETION_TOKENS = "max_completion_tokens", "max_completion_tokens (GPT-5, o-series)"


class TemperatureMode(models.TextChoices):
    AUTO = "auto", "Automatic (sent unless Test connection found the model refuses it)"
    HONOUR = "honour", "Sent as set"
    OMIT = "omit", "Omitted (the model accepts only its default)"


class ReasoningEffort(models.TextChoices):
    DEFAULT = "", "The model's default"
    MINIMAL = "minimal", "minimal"
    LOW = "low", "low"
    MEDIUM = "medium", "medium"
    HIGH = "high", "high"


def PriceField(help_text: str) -> models.DecimalField:  # noqa: N802 - a field factory
    return models.DecimalField(
        max_digits=12, decimal_places=4, null=True, blank=True, help_text=help_text
    )


class ModelPrice(models.Model):
    """A site-wide default price for a model name (set by admins): endpoints with no
    price of their own use it. ``model`` is a name (``gpt-5``) or a prefix ending in
    ``*`` (``gpt-5-mini*``, for its dated snapshots); the longest match wins."""

    model = models.CharField(max_length=200, unique=True)
    price_input = models.DecimalField(max_digits=12, decimal_places=4)
    price_output = models.DecimalField(max_digits=12, decimal_places=4)
    price_cached_input = PriceField(help_text="Blank: billed as input.")
    note = models.CharField(max_length=200, blank=True, help_text="Where the price is from.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["model"]

    def __str__(self) -> str:
        return f"{self.model}: ${self.price_input}/${self.price_output} per 1M"

    @classmethod
    def for_model(cls, name: str) -> ModelPrice | None:
        rows = cls.objects.all()
        exact = [r for r in rows if r.model == name]
        if exact:
            return exact[0]
        prefixes = [r for r in rows if r.model.endswith("*") and name.startswith(r.model[:-1])]
        return max(prefixes, key=lambda r: len(r.model), default=None)


class TeacherEndpoint(models.Model):
    team = models.ForeignKey("teams.Team", on_delete=models.CASCADE, related_name="teachers")
    name = models.CharField(max_length=100)
    base_url = models.CharField(
        max_length=500, help_text="Where the OpenAI-compatible API starts, usually …/v1."
    )
    model = models.CharField(max_length=200, help_text="The model name the API expects.")
    # Fernet token of the key (webapp.lib.crypto); empty when the endpoint needs none.
    api_key_encrypted = models.TextField(blank=True, editable=False)
    api_key_last4 = models.CharField(max_length=4, blank=True, editable=False)
    # scheme://host:port of the base URL the key was entered for: the key is sent there
    # only (webapp.teachers.specs), and an edit that moves the URL elsewhere drops it.
    api_key_origin = models.CharField(max_length=600, blank=True, editable=False)
    # A one-way digest of the key: the answers a key paid for are cached under it (with
    # the team), so a new key (another account) starts a cache of its own.
    api_key_digest = models.CharField(max_length=16, blank=True, editable=False)
    params = models.JSONField(
        default=dict,
        blank=True,
        help_text="Default sampling: temperature, top_p, max_tokens, seed (absent: the server's).",
    )
    # How the model wants the sampling said (trainer.teacher.Dialect).
    token_param = models.CharField(
        max_length=30, choices=TokenParam.choices, default=TokenParam.AUTO
    )
    temperature_mode = models.CharField(
        max_length=10, choices=TemperatureMode.choices, default=TemperatureMode.AUTO
    )
    reasoning_effort = models.CharField(
        max_length=10, choices=ReasoningEffort.choices, default="", blank=True
    )
    # Vendor options sent with every request (allow-listed: webapp.teachers.params).
    extra_body = models.JSONField(default=dict, blank=True)
    # How fast every job, evaluation, judge run and test of the site may ask it, all
    # together (trainer.ratelimit: shared through GAD_LIMITER_URL). Blank: no limit of
    # ours; the provider's x-ratelimit-* headers and 429s are honoured regardless.
    requests_per_minute = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_minute = models.PositiveIntegerField(null=True, blank=True)
    concurrency = models.PositiveSmallIntegerField(default=16)
    # US dollars per million tokens (trainer.pricing.Prices). Blank input and output:
    # the site's default for the model (ModelPrice), else no price (costs show as such).
    price_input = PriceField(help_text="$ per million input tokens.")
    price_output = PriceField(help_text="$ per million output tokens (reasoning included).")
    price_cached_input = PriceField(help_text="$ per million cached input tokens.")
    batch_discount = models.DecimalField(
        max_digits=4,
        decimal_places=3,
        default=Decimal("0.5"),
        help_text="The share a batch saves (OpenAI's Batch API: 0.5).",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    # What the last successful "Test connection" found of the model's dialect.
    found_token_param = models.CharField(max_length=30, blank=True, editable=False)
    found_temperature_fixed = models.BooleanField(default=False, editable=False)
    found_reasoning_tokens = models.PositiveIntegerField(null=True, blank=True, editable=False)

    # The last "Test connection"; blank status: never tested since the last change.
    test_status = models.CharField(max_length=10, choices=ConnectionStatus.choices, blank=True)
    test_latency_ms = models.PositiveIntegerField(null=True, blank=True)
    test_error = models.TextField(blank=True)
    test_error_kind = models.CharField(max_length=10, choices=ErrorKind.choices, blank=True)
    test_requested_at = models.DateTimeField(null=True, blank=True)
    tested_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["team", "name"]
        constraints = [
            models.UniqueConstraint(fields=["team", "name"], name="one_teacher_name_per_team")
        ]

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        # Spelled out so that no future field (or the key's ciphertext) slips into logs.
        return f"<TeacherEndpoint {self.pk} {self.name!r} model={self.model!r} at {self.base_url}>"

    @property
    def has_key(self) -> bool:
        return bool(self.api_key_encrypted)

    @property
    def key_goes_here(self) -> bool:
        """The stored key was entered for the base URL's scheme, host and port."""
        from webapp.teachers.ssrf import origin

        return self.has_key and self.api_key_origin == origin(self.base_url)

    def sampling(self, **override):
        """The trainer's Sampling for the stored params; ``override`` wins (e.g. max_tokens)."""
        from trainer.teacher import Sampling
        from webapp.teachers.params import RULES

        return Sampling(**({name: self.params.get(name) for name in RULES} | override))

    def dialect(self):
        """The trainer's Dialect: what the endpoint says, "auto" resolved by what the
        last Test connection found (else max_tokens, and the temperature sent)."""
        from trainer.teacher import Dialect

        token = self.token_param
        if token == TokenParam.AUTO:
            token = self.found_token_param or TokenParam.MAX_TOKENS
        mode = self.temperature_mode
        send = mode == TemperatureMode.HONOUR or (
            mode == TemperatureMode.AUTO and not self.found_temperature_fixed
        )
        return Dialect.of(
            self.extra_body or {},
            token_param=token,
            send_temperature=send,
            reasoning_effort=self.reasoning_effort or None,
        )

    def prices(self):
        """The trainer's Prices, and where they come from ("endpoint", "site default for
        gpt-5*"); (None, "") when neither the endpoint nor the site has one."""
        from trainer.pricing import Prices

        if self.price_input is not None and self.price_output is not None:
            own = Prices(self.price_input, self.price_output, self.price_cached_input)
            return replace(own, batch_discount=self.batch_discount), "endpoint"
        default = ModelPrice.for_model(self.model)
        if default is None:
            return None, ""
        prices = Prices(default.price_input, default.price_output, default.price_cached_input)
        source = f"site default for {default.model}"
        return replace(prices, batch_discount=self.batch_discount), source

    def limits(self):
        """The trainer's Limits: this endpoint's, shared by every worker of the site."""
        from trainer.ratelimit import Limits

        return Limits(
            concurrency=self.concurrency,
            requests_per_minute=self.requests_per_minute,
            tokens_per_minute=self.tokens_per_minute,
            shared_url=settings.GAD_LIMITER_URL,
            # Unique to this row of this database (test databases reuse primary keys).
            key=f"{settings.DATABASES['default']['NAME']}:endpoint:{self.pk}:"
            f"{self.created_at.timestamp():.6f}",
        )

    def dialect_found(self) -> str:
        """What the page says the last test found, e.g. "uses max_completion_tokens;
        temperature fixed at 1; spends ~64 reasoning tokens per answer"."""
        if not self.found_token_param:
            return ""
        parts = [f"uses {self.found_token_param}"]
        if self.found_temperature_fixed:
            parts.append("temperature fixed at its default (1)")
        if self.found_reasoning_tokens:
            parts.append(f"spends ~{self.found_reasoning_tokens} reasoning tokens per answer")
        return "; ".join(parts)

    @property
    def answer_scope(self) -> str:
        """Whose answers these are: the team's, paid with this key. Teams never share
        answers, even for the same URL, model and sampling."""
        return f"team:{self.team_id}:key:{self.api_key_digest}"

    @property
    def fingerprint(self) -> str:
        """The answer cache key's teacher half (base URL + model + sampling + the team
        and its key's digest; never the key itself)."""
        from trainer.teacher import TeacherSpec

        spec = TeacherSpec(
            self.base_url, self.model, sampling=self.sampling(), dialect=self.dialect()
        )
        return replace(spec, scope=self.answer_scope).fingerprint

    @property
    def api_key_hint(self) -> str | None:
        """What pages and the API show instead of the key: "••••abcd", or None."""
        return KEY_MASK + self.api_key_last4 if self.has_key else None

    def last_test(self) -> dict[str, object]:
        """The last "Test connection" as JSON: the status URL and the API show this."""
        return {
            "status": self.test_status,
            "latency_ms": self.test_latency_ms,
            "error": self.test_error,
            "error_kind": self.test_error_kind,
            "error_kind_label": self.get_test_error_kind_display(),
            "tested_at": self.tested_at.isoformat() if self.tested_at else None,
            "dialect_found": self.dialect_found() if self.test_status == "ok" else "",
        }


class TrackerAccount(models.Model):
    """A team's own experiment-tracker accounts (W&B, MLflow): the worker syncs the
    team's runs to them after the trainer, which never sees these keys and has no
    network, wrote them offline (worker.trackers). Keys are encrypted and write-only,
    like teacher keys."""

    team = models.OneToOneField(
        "teams.Team", on_delete=models.CASCADE, related_name="tracker_account"
    )
    wandb_api_key_encrypted = models.TextField(blank=True)
    wandb_api_key_last4 = models.CharField(max_length=4, blank=True)
    wandb_entity = models.CharField(
        max_length=100, blank=True, help_text="The W&B team or user the runs go to."
    )
    wandb_base_url = models.CharField(
        max_length=500, blank=True, help_text="A self-hosted W&B server; blank: wandb.ai."
    )
    mlflow_tracking_uri = models.CharField(max_length=500, blank=True)
    mlflow_token_encrypted = models.TextField(blank=True)
    mlflow_token_last4 = models.CharField(max_length=4, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"Trackers of {self.team}"

    @property
    def project(self) -> str:
        """The team's own W&B project and MLflow experiment."""
        return f"gad-studio-{self.team.slug}"

    @property
    def wandb_key_hint(self) -> str | None:
        return KEY_MASK + self.wandb_api_key_last4 if self.wandb_api_key_encrypted else None

    @property
    def mlflow_token_hint(self) -> str | None:
        return KEY_MASK + self.mlflow_token_last4 if self.mlflow_token_encrypted else None
