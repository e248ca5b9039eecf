"""``edgeseg run``: from a dataset to verified, benchmarked device artifacts and a model card, in one command.

A recipe (:mod:`edgeseg.workflow.recipe`) names the model, the data and one section per stage; the stages
(:mod:`edgeseg.workflow.stages`) train, convert each target, quantize to int8 within the accuracy budget,
verify every artifact against the FP32 torch model, benchmark them and write one HTML report with the model
card. Every stage is cached in the run folder (:mod:`edgeseg.workflow.cache`): a rerun after a crash or an
edit redoes only the stages whose inputs changed.

This package sits above the training API, the converters and the benchmark harness, and only the CLI
imports it.

Examples:
    >>> from edgeseg.workflow import load_recipe, run_recipe
    >>> summary = run_recipe(load_recipe("synthetic"), "runs/synthetic")
    >>> summary.report                       # runs/synthetic/report.html
"""

from __future__ import annotations

from typing import Any

__all__ = ["Recipe", "RunSummary", "find_recipe", "list_recipes", "load_recipe", "run_recipe"]


def __getattr__(name: str) -> Any:
    if name in ("Recipe", "find_recipe", "list_recipes", "load_recipe"):
        from edgeseg.workflow import recipe

        return getattr(recipe, name)
    if name in ("RunSummary", "run_recipe"):
        from edgeseg.workflow import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'edgeseg.workflow' has no attribute {name!r}")
