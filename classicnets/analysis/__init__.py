"""Inspection tools: the layer summary table (more to come: gradient flow, degradation, plots)."""

from .summary import Row, Summary, eval_formula, summary

__all__ = ["Row", "Summary", "eval_formula", "summary"]
