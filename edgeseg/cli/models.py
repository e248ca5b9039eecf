"""List every registered model with its parameters, FLOPs and default input size."""

from __future__ import annotations

import argparse

from edgeseg.cli._format import add_format_argument, print_json, table, wants_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'ultralightunet*'")
    add_format_argument(p)


def model_summary(name: str, input_size: int | tuple[int, ...] | None = None) -> dict:
    """The row `edgeseg models` prints for one model (also used by `edgeseg info`)."""
    from edgeseg.models import get_model_cfg
    from edgeseg.profiling import profile
    from edgeseg.weights import shipped_weights

    cfg = get_model_cfg(name)
    prof = profile(name, input_size)
    return {
        "name": name,
        "family": cfg.family,
        "params": prof.params,
        "params_inference": prof.params_inference,
        "flops": prof.macs,
        "gflops": round(prof.gflops, 4),
        "input_size": list(prof.input_size[2:]),
        "spatial_dims": cfg.spatial_dims,
        "paper_params_m": cfg.paper.params_m,
        "paper_gflops": cfg.paper.flops_g,
        "pretrained": shipped_weights(name) is not None,
        "description": cfg.description,
    }


def main(args: argparse.Namespace) -> int:
    import sys

    from edgeseg.common.deps import MissingDependencyError
    from edgeseg.models import list_models

    names = list_models(args.pattern)
    if not names:
        raise ValueError(f"no registered model matches {args.pattern!r}; run `edgeseg models` for all")
    rows = []
    for n in names:
        try:
            rows.append(model_summary(n))
        except MissingDependencyError as exc:  # e.g. UNETR without MONAI: list the others
            if n == names[-1] and not rows:
                raise
            print(f"edgeseg: {n} not listed: {exc}", file=sys.stderr)
    if wants_json(args):
        print_json(rows)
        return 0

    def fmt(v, spec):
        return "-" if v is None else format(v, spec)

    print(table(
        [(r["name"], f"{r['params'] / 1e6:.3f}", fmt(r["paper_params_m"], ".3f"), f"{r['gflops']:.3f}",
          fmt(r["paper_gflops"], ".3f"), "x".join(map(str, r["input_size"])), "yes" if r["pretrained"] else "-")
         for r in rows],
        ["model", "params(M)", "paper", "GFLOPs", "paper", "input", "weights"],
    ))
    print("\nGFLOPs are multiply-accumulates at the default input size (ptflops convention, as the papers).")
    return 0
