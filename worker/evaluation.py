"""Evaluation tasks (answer generation for evaluations)."""
