"""Evaluation: metrics over a model's answer records, method labels, and the report (tables and plot)."""
