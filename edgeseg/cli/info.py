"""Show one model's configuration, options, and profile at an input size."""

from __future__ import annotations

import argparse

from edgeseg.cli._format import add_format_argument, print_json, wants_json
from edgeseg.common.args import positive_int


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="registered model name (see `edgeseg models`)")
    p.add_argument("--img-size", type=positive_int, default=None, help="spatial input size (default: the model's)")
    add_format_argument(p)


def main(args: argparse.Namespace) -> int:
    from edgeseg.cli.models import model_summary
    from edgeseg.models import get_model_cfg
    from edgeseg.weights import model_card

    cfg = get_model_cfg(args.name)
    if args.img_size is not None and (args.img_size <= 0 or args.img_size % cfg.divisible_by):
        raise ValueError(f"--img-size must be a positive multiple of {cfg.divisible_by} for {args.name}")
    summary = model_summary(args.name, args.img_size)
    info = {"cfg": cfg.to_dict(), "profile": summary, "model_card": model_card(args.name)}
    if wants_json(args):
        print_json(info)
        return 0
    size = "x".join(map(str, summary["input_size"]))
    print(f"{cfg.name}  ({cfg.family})  {cfg.description}")
    print(f"  input           {cfg.in_channels} x {size}  (multiple of {cfg.divisible_by})")
    print(f"  classes         {cfg.num_classes}")
    print(f"  mean / std      {cfg.mean} / {cfg.std}")
    pp = f"  (paper: {cfg.paper.params_m}M)" if cfg.paper.params_m else ""
    pf = f"  (paper: {cfg.paper.flops_g}G at {cfg.paper.input_size})" if cfg.paper.flops_g else ""
    print(f"  params          {summary['params']:,}{pp}; {summary['params_inference']:,} used by forward")
    print(f"  GFLOPs          {summary['gflops']:.4f} at {size}{pf}")
    if cfg.paper.source:
        print(f"  source          {cfg.paper.source}")
    for k, v in cfg.options.items():
        print(f"  option          {k} = {v!r}")
    print(f"  weights         {'shipped' if summary['pretrained'] else 'none shipped (random init)'}")
    print(f"  license         {cfg.license}")
    return 0
