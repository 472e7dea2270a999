"""Live monitoring of training jobs: metric series for the charts, down-sampling, the
health of the adversarial game (alarms and the optional guard), and the samples viewer.

Not a Django app: it owns no models. The pure parts (``downsample``, ``health``,
``guard.guard_action``, ``text``) import nothing from Django; ``series`` and ``status``
read the jobs app's tables.
"""
