"""What teacher tokens cost: a run's usage by kind, and an endpoint's prices.

Providers bill per million tokens, input and output at different prices, input they
served from their prompt cache at a lower one (OpenAI: ``usage.prompt_tokens_details.
cached_tokens``), and hidden reasoning as output (it is part of ``completion_tokens``).
Their batch APIs bill a discount on both (OpenAI's Batch API: 50%).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from decimal import Decimal

MILLION = Decimal(1_000_000)


@dataclass
class Usage:
    """Tokens a run spent, by kind: ``reasoning`` is part of ``completion``, ``cached``
    part of ``prompt``."""

    prompt: int = 0
    completion: int = 0
    reasoning: int = 0
    cached: int = 0

    @property
    def total(self) -> int:
        return self.prompt + self.completion

    def add(self, other: Usage) -> None:
        self.prompt += other.prompt
        self.completion += other.completion
        self.reasoning += other.reasoning
        self.cached += other.cached

    def as_dict(self) -> dict[str, int]:
        return asdict(self) | {"total": self.total}


@dataclass(frozen=True)
class Prices:
    """US dollars per million tokens; ``cached_input`` None: billed as input."""

    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None
    batch_discount: Decimal = Decimal("0.5")  # the share a batch saves

    def cost(self, usage: Usage, batch: bool = False) -> Decimal:
        cached = min(usage.cached, usage.prompt)
        cached_price = self.input if self.cached_input is None else self.cached_input
        dollars = (
            (usage.prompt - cached) * self.input
            + cached * cached_price
            + usage.completion * self.output
        ) / MILLION
        if batch:
            dollars *= 1 - self.batch_discount
        return dollars.quantize(Decimal("0.000001"))

    @property
    def most_per_token(self) -> Decimal:
        """The dearest token: what a reservation of tokens is priced at."""
        return max(self.input, self.output) / MILLION


def dollars(amount: Decimal | None) -> str:
    """$0.42, $1,234.50, $0.0031 (small amounts keep two significant figures)."""
    if amount is None:
        return "no price"
    if amount and abs(amount) < Decimal("0.01"):
        return f"${amount:.2g}" if amount >= Decimal("0.0001") else "<$0.0001"
    return f"${amount:,.2f}"
