"""Run a recipe: train, convert every target, int8 within the accuracy budget, verify, benchmark, report.

One command from a dataset to verified device artifacts, a benchmark and one HTML report with the model
card. Every stage is cached in the run folder (default runs/<recipe name>): a rerun after a crash or an edit
redoes only the stages whose recipe section or inputs changed, and says which it skipped; an interrupted
training resumes from its last.pt. A target whose backend is not installed is skipped with the extra that
installs it (and converted on the run after it is installed). Exit code 1 when an artifact failed conversion
or verification (or its budget, with quantize.over_budget: fail); a rerun tries failed conversions again.

Examples:
  edgeseg run --recipe synthetic                       # CI smoke test: minutes on 2 CPU cores
  edgeseg run --recipe kvasir-seg --data path/to/Kvasir-SEG
  edgeseg run my-recipe.yaml --set train.epochs=20 --set quantize.max_dice_drop=0.01
  edgeseg run --recipe synthetic --redo bench          # measure again, keep the rest
  edgeseg run --list                                   # the shipped recipes

Shipped recipes live in edgeseg/workflow/recipes/; the format is in edgeseg/workflow/recipe.py.
"""

from __future__ import annotations

import argparse
import sys

from edgeseg.cli._format import add_format_argument, wants_json
from edgeseg.common.args import add_data_argument


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe_path", nargs="?", metavar="RECIPE", help="a recipe YAML path or a shipped name")
    p.add_argument("--recipe", help="the same as RECIPE: a shipped recipe's name (synthetic, kvasir-seg) or a path")
    add_data_argument(p, default=None, what="dataset (replaces the recipe's data):")
    p.add_argument("--out", help="run folder (default: runs/<recipe name>)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", dest="overrides",
                   help="override a recipe key, repeatable; VALUE is read as YAML (e.g. train.epochs=1, "
                        "convert.targets=[onnx])")
    p.add_argument("--redo", action="append", default=[], metavar="STAGE",
                   help="run STAGE even when cached (train, convert, quantize, bench, report or all); "
                        "repeatable or comma-separated")
    p.add_argument("--list", action="store_true", help="list the shipped recipes and exit")
    add_format_argument(p)


def _overrides(items: list[str]) -> dict:
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r}: use SECTION.KEY=VALUE, e.g. --set train.epochs=2")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ValueError(f"--set {item!r}: the value is not valid YAML") from None
    return out


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _print_summary(summary) -> None:
    from edgeseg.cli._format import table

    card = summary.card
    rows = []
    for a in card["artifacts"]:
        ver, bud, b = a.get("verified") or {}, a.get("budget") or {}, a.get("bench") or {}
        status = a["status"] + ("" if a.get("kept", True) else " (not kept)")
        rows.append([a["path"], a["target"], a["precision"], status, _fmt(ver.get("mask_agreement"), ".4f"),
                     _fmt(bud.get("dice_drop"), "+.4f") if bud else "-", _fmt(b.get("p50_ms"), ".2f"),
                     _fmt(b.get("dice"), ".4f")])
    if rows:
        print(table(rows, ["artifact", "target", "precision", "status", "agreement", "Dice drop", "p50 ms",
                           "Dice"]))
    for s in card["skipped"]:
        print(f"skipped {s['target']} {s.get('precision', '')}: {s['reason']}")
    root = summary.folder
    print(f"\nreport: {summary.report}\nmodel card: {root / 'model_card.json'}")
    cached = ", ".join(summary.cached) or "none"
    print(f"stages run: {', '.join(n for n, _ in summary.ran) or 'none'}; cached: {cached}")
    rec = card.get("recommended")
    if rec:
        path = root / rec["path"]
        print(f"recommended: {path} ({rec['target']} {rec['precision']}, p50 {rec['p50_ms']:.2f} ms)")
        print(f"next: edgeseg predict --artifact {path} --input IMAGES --out preds/")
        print(f"      edgeseg demo --artifact {path} --source synthetic --headless")


def main(args: argparse.Namespace) -> int:
    import warnings

    from edgeseg.cli.convert import _stdout_to_stderr
    from edgeseg.workflow.recipe import list_recipes, load_recipe

    if args.list:
        from edgeseg.workflow.recipe import recipe_description

        for name in list_recipes():
            print(f"{name}: {recipe_description(name)}")
        return 0
    if args.recipe and args.recipe_path and args.recipe != args.recipe_path:
        raise ValueError(f"two recipes given ({args.recipe_path} and --recipe {args.recipe}); give one")
    ref = args.recipe or args.recipe_path
    if not ref:
        raise ValueError(f"say which recipe to run: edgeseg run RECIPE.yaml or --recipe NAME "
                         f"(shipped: {', '.join(list_recipes())})")

    def one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"edgeseg: warning: {str(message).strip().splitlines()[0]}", file=sys.stderr, flush=True)

    warnings.showwarning = one_line_warning
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    recipe = load_recipe(ref, _overrides(args.overrides), args.data)
    from edgeseg.workflow.runner import run_recipe

    with _stdout_to_stderr(wants_json(args)):
        summary = run_recipe(recipe, args.out, [s.strip() for item in args.redo for s in item.split(",") if s.strip()])
    if wants_json(args):
        from edgeseg.cli._format import print_json

        print_json({"folder": str(summary.folder), "ran": [{"stage": n, "why": w} for n, w in summary.ran],
                    "cached": summary.cached, "failures": summary.failures, "report": str(summary.report),
                    "card": summary.card})
    else:
        _print_summary(summary)
    if summary.failures:
        print(f"edgeseg: error: {len(summary.failures)} artifact(s) failed: {'; '.join(summary.failures)} "
              f"(see {summary.report}; a rerun tries failed conversions again and keeps the rest; "
              "--redo quantize for an artifact that failed its check)", file=sys.stderr)
        return 1
    return 0
