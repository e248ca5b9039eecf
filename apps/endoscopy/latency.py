"""``python -m edgeseg.apps.endoscopy.latency demo.jsonl``: the latency table of a demo log.

Per stage (read, pre, infer, post with the stabiliser, overlay, output) p50 / p90 / p99 / mean, capture to
shown, and the jitter of the intervals between shown and between captured frames; see
:mod:`edgeseg.apps.endoscopy.timing` for what each figure is.

Examples:
    $ edgeseg demo --model ultralightunet-s --source synthetic --headless --realtime --log demo.jsonl
    $ python -m edgeseg.apps.endoscopy.latency demo.jsonl
    $ python -m edgeseg.apps.endoscopy.latency demo.jsonl --json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from edgeseg.apps.endoscopy.timing import format_report, latency_report, read_log


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgeseg.apps.endoscopy.latency", description=__doc__.split("\n")[0],
                                epilog=__doc__.split("Examples:")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("log", help="the demo's JSONL log")
    p.add_argument("--skip", type=int, default=0, metavar="N", help="leave out the first N records (warm-up)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    args = p.parse_args(argv)
    try:
        rep = latency_report(read_log(args.log)[args.skip:])
    except (ValueError, FileNotFoundError) as exc:
        print(f"edgeseg: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(rep, indent=2) if args.json else format_report(rep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
