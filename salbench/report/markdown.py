"""Stage 5: ``build_report`` writes ``tables/``, ``figures/`` and ``REPORT.md`` from ``results.csv``.

One section per (model, dataset, protocol) in the results: configuration, Tables 1-4 (CSV, Markdown,
LaTeX), the published numbers side by side when the run is the study's configuration, figures, the
claims, the further evaluations (sanity checks, Gomez et al.'s metrics, ROAR; only when ``results.csv``
holds their rows), and the provenance handed in through ``extra``. Parts the run lacks are reported as "not
computed in this run".
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from salbench.report.agreement import (
    figure_rank_agreement,
    rank_agreement,
    tau_intervals,
    write_tau,
)
from salbench.report.claims import (
    DEFAULT_THRESHOLDS,
    ClaimThresholds,
    claims_section,
    evaluate_claims,
    judge_claims,
)
from salbench.report.controls import controls_section
from salbench.report.extras import extras_section
from salbench.report.figures import (
    Figure1Inputs,
    figure1,
    figure2,
    figure_curves,
)
from salbench.report.html import write_html
from salbench.report.presentation import (
    TABLE1_KEYS,
    TABLE3_KEYS,
    augmentation_label,
    method_display,
    method_order,
)
from salbench.report.protocols import protocol_sections
from salbench.report.published import (
    PUBLISHED_CSV,
    STUDY,
    SUSPECT_NOTE,
    compare,
    comparison_markdown,
    is_study_configuration,
    load_published,
    published_as_results,
)
from salbench.report.render import CI_NOTE, to_ci_csv, to_csv, to_latex, to_markdown
from salbench.report.results import (
    RunKey,
    presented,
    presented_higher_is_better,
    rows_of_model,
    run_keys,
    select_run,
)
from salbench.report.significance import significance_section
from salbench.report.tables import TITLES, Table, augmented_ids, build_tables
from salbench.stats import DEFAULT_BOOTSTRAP, Bootstrap
from salbench.store.outputs import write_csv, write_text
from salbench.store.results import read_results

log = logging.getLogger(__name__)
NOT_COMPUTED = "not computed in this run"
CONVENTIONS = (
    "Values as the paper prints them: AI, AG, I, Sparseness and localization scores x100; "
    "AD-bar = 100 - 100 AD and D-bar = 100 - 100 D; Monotonicity, MS, AS raw (two decimals); "
    "Complexity and EC raw (one decimal). "
    "Best value per column in **bold** (direction from `higher_is_better`; bars flip it)."
)


def _configuration(key: RunKey, frame: pd.DataFrame) -> list[str]:
    plain = frame[frame["augmentation"] == "none"]
    n = plain["n_images"].dropna()
    images = (
        "n/a" if n.empty else (f"{int(n.min())}" if n.min() == n.max() else f"{int(n.min())}-{int(n.max())}")
    )
    skipped = frame["n_skipped"].fillna(0)
    largest = int(skipped.max()) if len(frame) else 0
    methods = ", ".join(f"{method_display(m).label} (`{m}`)" for m in method_order(set(frame["method"])))
    augs = ", ".join(augmentation_label(a) for a in augmented_ids(frame)) or NOT_COMPUTED
    return [
        f"- model: `{key.model}`; dataset: `{key.dataset}`; protocol: `{key.protocol}`",
        f"- label sets: {', '.join(sorted(set(frame['label_set'])))}",
        f"- methods: {methods}",
        f"- metrics: {', '.join(f'`{m}`' for m in sorted(set(frame['metric'])))}",
        f"- augmentations: {augs}",
        f"- images per result (un-augmented): {images}; results with skipped images: "
        f"{int((skipped > 0).sum())} of {len(frame)} (largest skip count {largest})",
        "",
        CONVENTIONS,
    ]


FEW_IMAGES = 100
"""Below this many images per value a table's differences of a few points are within sampling noise."""


def _accuracy(rows: pd.DataFrame) -> tuple[float, float, int] | None:
    """(top-1 accuracy, chance, images) of the explained classifier on the plain images, if recorded."""
    plain = rows[(rows["method"] == "model") & (rows["augmentation"] == "none")]
    acc = plain.loc[plain["metric"] == "top1_accuracy"]
    if acc.empty:
        return None
    chance = plain.loc[plain["metric"] == "chance_accuracy", "value"]
    return (
        float(acc["value"].iloc[0]),
        float(chance.iloc[0]) if len(chance) else float("nan"),
        int(acc["n_images"].iloc[0]),
    )


def _summary(key: RunKey, rows: pd.DataFrame, tables: dict[str, Table | None], claims: list) -> list[str]:
    """The first screen: what was explained, how good the model is, the claims' verdicts, Table 1."""
    lines = [f"### {key.describe()}", ""]
    acc = _accuracy(rows)
    n = rows.loc[(rows["augmentation"] == "none") & (rows["method"] != "model"), "n_images"]
    images = int(n.max()) if len(n) else (acc[2] if acc else 0)
    if acc is not None:
        accuracy, chance, _ = acc
        text = f"- **Classifier**: top-1 accuracy {100 * accuracy:.1f}% on the {images} explained images"
        text += f" (chance {100 * chance:.1f}%)." if np.isfinite(chance) else "."
        if np.isfinite(chance) and accuracy < 2 * chance:
            text += (
                " **Warning: near chance: its maps explain guesses, and the metrics below say little "
                "about the methods.**"
            )
        lines.append(text)
    else:
        lines.append(f"- **Classifier**: accuracy not recorded (run diagnostics); {images} explained images.")
    if 0 < images < FEW_IMAGES:
        lines.append(
            f"- **Sample size**: every value rests on at most {images} images; differences of a few "
            "points between methods are within sampling noise."
        )
    lines += ["- **Claims of the study on this run**:", ""]
    for i, c in enumerate(claims, start=1):
        why = f" ({c.statistics()})" if c.judged else ""
        lines.append(f"  {i}. {c.claim}: **{c.verdict}**{why}.")
    lines.append("")
    if tables.get("table1") is not None:
        lines += [f"**{TITLES['table1']}**", "", to_markdown(tables["table1"])]
    return lines


def _write_table(table: Table, folder: Path) -> list[str]:
    write_text(folder / f"{table.name}.csv", to_csv(table))
    if table.has_intervals:
        write_text(folder / f"{table.name}_ci.csv", to_ci_csv(table))
    write_text(folder / f"{table.name}.md", to_markdown(table))
    write_text(folder / f"{table.name}.tex", to_latex(table))
    return [to_markdown(table)]


def _tables_section(tables: dict[str, Table | None], out: Path, sub: str) -> list[str]:
    lines: list[str] = []
    for name, table in tables.items():
        lines += [f"### {TITLES[name]}", ""]
        if table is None:
            lines += [f"{NOT_COMPUTED}: `results.csv` has no rows for this table.", ""]
            continue
        lines += _write_table(table, out / "tables" / sub)
        notes = (*table.notes, CI_NOTE) if table.has_intervals else table.notes
        lines += [f"*Notes:* {'; '.join(notes)}." if notes else "", ""]
        rel = "/".join(p for p in ("tables", sub, table.name) if p)
        files = f"Files: [CSV]({rel}.csv), [Markdown]({rel}.md), [LaTeX]({rel}.tex)"
        files += f", [CSV with intervals]({rel}_ci.csv)" if table.has_intervals else ""
        lines += [files, ""]
    return lines


def _published_section(
    key: RunKey, tables: dict[str, Table | None], out: Path, sub: str, published_csv: Path
) -> list[str]:
    lines = ["### Comparison with the published numbers", ""]
    if not is_study_configuration(key):
        why = f"Not shown: this run is {key.describe()}, not the study's configuration: {STUDY.describe()}."
        return [*lines, why, ""]
    comparison = compare(tables, load_published(published_csv))
    rel = "/".join(p for p in ("tables", sub, "published_comparison.csv") if p)
    write_csv(out / rel, comparison)
    lines += [
        "Cells: ours / paper (ours - paper). The paper used all 50,000 validation images (Table 4: the "
        f"1,000-image subset). † {SUSPECT_NOTE}. Full comparison: [{rel}]({rel})",
        "",
    ]
    for name in ("table1", "table2", "table3", "table4"):
        text = comparison_markdown(comparison, name)
        if text:
            lines += [f"#### {TITLES[name].split('.')[0]}", "", text]
    return lines


def _figures_section(
    key: RunKey,
    frame: pd.DataFrame,
    out: Path,
    sub: str,
    per_image: pd.DataFrame | None,
    curves: pd.DataFrame | None,
    fig1: Figure1Inputs | None,
    intervals: Bootstrap = DEFAULT_BOOTSTRAP,
) -> list[str]:
    lines = ["### Figures", ""]
    rel = "/".join(p for p in ("figures", sub) if p)

    def add(name: str, caption: str, make: Any, missing: str) -> None:
        nonlocal lines
        if make is None:
            lines += [f"- {caption}: {NOT_COMPUTED} ({missing}).", ""]
            return
        make(out / rel / f"{name}.png")
        lines += [f"![{caption}]({rel}/{name}.png)", "", f"*{caption}*", ""]

    rows = rows_of_model(per_image, key.model)
    add(
        "figure1",
        "Figure 1. Best and worst image per metric with every method's map",
        None
        if fig1 is None
        else lambda p: figure1(
            fig1.images, fig1.maps, fig1.picks, p, values=fig1.values, methods=fig1.methods or None
        ),
        "needs the map stores and images of the picked images",
    )
    add(
        "figure2",
        "Figure 2. AG, AD-bar, I, D-bar against the ground-truth probability y_c",
        None if rows is None else lambda p: figure2(rows, p),
        "no per-image recognition CSVs",
    )
    mean = rows_of_model(curves, key.model, label_set=None)
    add(
        "curves",
        "Mean insertion and deletion curves per method",
        None if mean is None else lambda p: figure_curves(mean, p),
        "no curve files",
    )
    keys = (*TABLE1_KEYS, *TABLE3_KEYS)
    values = presented(frame, keys, "groundtruth")
    values = values.loc[:, values.notna().sum() >= 3]
    tau, low, high = None, None, None
    if values.shape[1] >= 2:
        directions = {k: presented_higher_is_better(frame, k) for k in values.columns}
        tau = rank_agreement(values, directions)
        low, high = tau_intervals(
            frame, rows_of_model(per_image, key.model, label_set=None), values, intervals
        )
        write_tau(out / "tables" / sub / "rank_agreement.csv", tau, low, high, intervals)
    caption = "Rank agreement between metrics (Kendall tau over methods"
    level = f"{100 * intervals.level:g}%"
    caption += f", with its {level} bootstrap interval over images)" if low is not None else ")"
    add(
        "rank_agreement",
        caption,
        None if tau is None else lambda p: figure_rank_agreement(tau, p, low=low, high=high),
        "fewer than two metrics with at least three methods",
    )
    return lines


def _render_value(value: Any) -> str:
    if isinstance(value, Mapping | list | tuple):
        return f"`{json.dumps(value, default=str, sort_keys=True)}`"
    return str(value).replace("|", r"\|")


def _provenance(extra: Mapping[str, Any] | None) -> list[str]:
    lines = ["## Provenance", ""]
    if not extra:
        return [*lines, "No configuration, manifests, versions or timings were provided.", ""]
    for name, value in extra.items():
        lines += [f"### {name}", ""]
        if isinstance(value, Mapping) and value and all(isinstance(v, Mapping) for v in value.values()):
            for sub, inner in value.items():
                lines += [f"#### {sub}", "", "| key | value |", "|:--|:--|"]
                lines += [f"| {k} | {_render_value(v)} |" for k, v in inner.items()]
                lines.append("")
        elif isinstance(value, Mapping):
            lines += [
                "| key | value |",
                "|:--|:--|",
                *(f"| {k} | {_render_value(v)} |" for k, v in value.items()),
                "",
            ]
        else:
            lines += [_render_value(value), ""]
    return lines


def build_report(
    results_csv: str | Path,
    out_dir: str | Path,
    extra: Mapping[str, Any] | None = None,
    *,
    per_image: pd.DataFrame | None = None,
    curves: pd.DataFrame | None = None,
    figure1_inputs: Mapping[str, Figure1Inputs] | None = None,
    thresholds: ClaimThresholds = DEFAULT_THRESHOLDS,
    published_csv: str | Path = PUBLISHED_CSV,
    intervals: Bootstrap = DEFAULT_BOOTSTRAP,
    others: Mapping[str, tuple[pd.DataFrame, pd.DataFrame | None]] | None = None,
) -> Path:
    """Write ``tables/``, ``figures/`` and ``REPORT.md`` under ``out_dir``; return the REPORT.md path.

    Args:
        results_csv: the tidy long-format results (the report's only numeric source).
        out_dir: report folder (created).
        extra: provenance shown verbatim: configuration, manifests, versions, timings, ...
        per_image: per-image recognition rows (``model, label_set, method, image_id, base_prob,
            average_drop, average_gain, insertion, deletion``) for Figure 2, the Figure 1 picks and
            the paired comparisons of methods (every label set given).
        curves: mean insertion/deletion curves (``model, method, curve, fraction, value``).
        figure1_inputs: model id -> images, maps and picks of Figure 1.
        thresholds: the claims' thresholds.
        published_csv: the published tables (``configs/acml2024_tables.csv``).
        intervals: bootstrap settings of the paired comparisons (the run's ``run.ci_*``).
        others: protocol -> (``results.csv`` rows, per-image rows) of the same models run under
            another protocol (``salbench compare``): each configuration gets a section comparing them.

    Raises:
        DataError: unreadable or malformed ``results.csv`` / per-image data.
    """
    results_csv, out = Path(results_csv), Path(out_dir)
    frame = read_results(results_csv, missing_ok=False)
    digest = hashlib.sha256(results_csv.read_bytes()).hexdigest()[:16]
    keys = run_keys(frame)
    reference = evaluate_claims(published_as_results(load_published(published_csv)), thresholds)
    lines = [
        "# salbench report",
        "",
        f"Built from `{results_csv.name}` ({len(frame)} rows, sha256 {digest}...). Reproduces the tables, "
        "figures and claims of Zhang, Torres Figueroa, Hermanns: *Saliency Maps Give a False Sense of "
        "Explanability to Image Classifiers* (ACML 2024) on this run's own numbers.",
        "",
    ]
    if not keys:
        lines += [f"`{results_csv.name}` holds no results: every table and figure is {NOT_COMPUTED}.", ""]
    runs = [(key, "" if len(keys) == 1 else key.slug, select_run(frame, key)) for key in keys]
    built = {
        key: (
            build_tables(rows),
            judge_claims(rows, rows_of_model(per_image, key.model, label_set=None), intervals, thresholds),
        )
        for key, _, rows in runs
    }
    if runs:
        lines += ["## Summary", ""]
        for key, _, rows in runs:
            lines += _summary(key, rows, *built[key])
        lines += [
            "Details below: configuration, every table, figures, claims with their evidence. "
            "Configuration, manifests and versions: [APPENDIX.md](APPENDIX.md).",
            "",
        ]
    for key, sub, rows in runs:
        tables, claims = built[key]
        fig1 = (figure1_inputs or {}).get(key.model)
        lines += [f"## {key.describe()}", "", "### Configuration", "", *_configuration(key, rows), ""]
        lines += _tables_section(tables, out, sub)
        model_rows = rows_of_model(per_image, key.model, label_set=None)
        lines += significance_section(model_rows, rows, out, sub, intervals)
        lines += controls_section(model_rows, rows, out, sub)
        lines += _published_section(key, tables, out, sub, Path(published_csv))
        lines += _figures_section(key, rows, out, sub, per_image, curves, fig1, intervals)
        lines += claims_section(claims, reference)
        lines += protocol_sections(
            key, rows, model_rows, claims, frame, others or {}, out, sub, intervals, thresholds
        )
        lines += extras_section(rows, key.model, out, sub)
    write_text(
        out / "APPENDIX.md", "\n".join(["# salbench report: appendix", "", *_provenance(extra)]) + "\n"
    )
    path = out / "REPORT.md"
    write_text(path, "\n".join(lines).rstrip() + "\n")
    write_html(path)
    log.info("report written to %s", path)
    return path
