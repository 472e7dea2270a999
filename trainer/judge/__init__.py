"""LLM-as-judge evaluation (GAD.md "Evaluation"), through the teacher's one wrapper.

- `trainer.judge.prompt`: the judge prompt, and the parser of its verdicts;
- `trainer.judge.run`: the cost forecast and the judge run (references, verdicts, one
  retry of each unreadable verdict) over `trainer.teacher.collect`;
- `trainer.judge.report`: item results, each system's score with its bootstrap
  confidence interval, and the same per group of items.

`python -m trainer judge` is in `trainer.cli_eval`. Importing this package loads no
torch.
"""

from trainer.judge.prompt import (
    JUDGE_SYSTEM,
    NUDGE,
    UnparseableVerdict,
    item_score,
    parse_verdict,
    render_question,
    verdict_messages,
)
from trainer.judge.report import JudgeConfig, reports_by_group
from trainer.judge.run import Forecast, JudgeItem, forecast, forecast_run, judge

__all__ = [
    "JUDGE_SYSTEM",
    "NUDGE",
    "Forecast",
    "JudgeConfig",
    "JudgeItem",
    "UnparseableVerdict",
    "forecast",
    "forecast_run",
    "item_score",
    "judge",
    "parse_verdict",
    "render_question",
    "reports_by_group",
    "verdict_messages",
]
