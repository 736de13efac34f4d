"""`engine calibrate cache`: measure the semantic cache on labelled pairs and pick its threshold."""

from __future__ import annotations

import click

from engine.cli.app import CONTEXT


@click.group("calibrate", context_settings=CONTEXT)
def calibrate_group() -> None:
    """Calibrate learned parts of a policy on labelled data."""


@calibrate_group.command("cache")
@click.option("--pairs", "pairs_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="JSON Lines of {a, b, same, kind?, lang?, type?} pairs.")
@click.option("--max-false-hit-rate", type=click.FloatRange(0, 1), default=0.01, show_default=True,
              help="Largest share of near-miss pairs allowed to hit.")
@click.option("--min-threshold", type=click.FloatRange(0, 1), default=0.75, show_default=True,
              help="Never pick a threshold below this (unrelated prompts must still miss).")
@click.option("--embedder", type=click.Choice(["bundled", "hashing"]), default="bundled", show_default=True)
@click.option("--cross-validate", "folds", type=click.IntRange(min=2), default=2, show_default=True,
              help="Also calibrate on all folds but one and measure on the held-out one.")
def cache_cmd(pairs_path: str, max_false_hit_rate: float, min_threshold: float, embedder: str, folds: int) -> None:
    """Sweep similarity thresholds on PAIRS: false-hit rate and paraphrase reuse, with the guards on.

    \b
    Example:
      engine calibrate cache --pairs cache-pairs.jsonl --max-false-hit-rate 0.01
    """
    from rich.console import Console
    from rich.table import Table

    from engine.semantic.calibrate import calibrate, cross_validate, load_pairs, score_pairs
    from engine.semantic.embedders import EmbedderError, HashingEmbedder

    try:
        pairs = load_pairs(pairs_path)
        if embedder == "hashing":
            emb: object = HashingEmbedder()
        else:
            from engine.semantic.onnx import OnnxEmbedder

            emb = OnnxEmbedder()
        scored = score_pairs(pairs, emb)  # type: ignore[arg-type]
    except EmbedderError as e:
        raise click.ClickException(str(e)) from None
    cal = calibrate(scored, max_false_hit_rate=max_false_hit_rate, min_threshold=min_threshold)
    out = Console(width=110)
    table = Table(title=f"{pairs_path}: {cal.n_true} paraphrases, {cal.n_false} near misses ({embedder} embedder)")
    for col in ("threshold", "paraphrase reuse", "false hits", "false-hit rate", ""):
        table.add_column(col, justify="right")
    for r in cal.rows[::5] + ((cal.chosen,) if cal.chosen and cal.chosen not in cal.rows[::5] else ()):
        mark = "<- chosen" if r is cal.chosen else ("over target" if r.false_hit_rate > max_false_hit_rate else "")
        table.add_row(f"{r.threshold:.2f}", f"{r.reuse:.1%} ({r.true_hits})", str(r.false_hits),
                      f"{r.false_hit_rate:.1%}", mark)
    out.print(table)
    if cal.chosen is None:
        out.print(f"no threshold at or above {min_threshold} keeps false hits at or below {max_false_hit_rate:.1%}")
        raise SystemExit(1)
    for attr, per in cal.groups.items():
        t = Table(title=f"at {cal.chosen.threshold:.2f}, by {attr}")
        for col in (attr, "reuse", "false hits"):
            t.add_column(col, justify="right")
        for value, (th, nt, fh, nf) in per.items():
            t.add_row(value, f"{th}/{nt}" if nt else "-", f"{fh}/{nf}" if nf else "-")
        out.print(t)
    cv = cross_validate(scored, max_false_hit_rate=max_false_hit_rate, min_threshold=min_threshold, folds=folds)
    for k, (thr, row) in enumerate(cv, 1):
        if row is None:
            out.print(f"fold {k}: no threshold met the target on the other folds")
        else:
            out.print(f"cross-validated fold {k}/{folds}: threshold {thr:.2f} from the other folds -> held-out "
                      f"reuse {row.reuse:.1%}, false hits {row.false_hits} ({row.false_hit_rate:.1%})")
    out.print("\npolicy snippet:")
    click.echo(f"cache:\n  semantic:\n    embedder: {embedder}\n    threshold: {cal.chosen.threshold:.2f}")
