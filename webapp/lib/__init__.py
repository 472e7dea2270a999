"""Helpers that import no app: the health rules and the metric down-sampling of the
monitoring pages, the samples viewer's text handling, the charts' layout, the
annotation statistics, spreadsheet-safe CSV, the errors shown to people and the pages'
form helper. The import-linter contracts in pyproject.toml keep it below every app."""
