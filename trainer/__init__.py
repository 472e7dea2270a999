"""GAD Studio's training library: Generative Adversarial Distillation and SeqKD.

Never imports Django or Celery; usable alone through `python -m trainer ...`.
Importing this package is cheap: torch and transformers load only in the modules
that need them.
"""

__version__ = "0.1.0"
