"""The paper's Tables 1-4 (SPEC section 8) built from the tidy results of one configuration.

Every builder takes the ``results.csv`` rows of one (model, dataset, protocol) and returns a
:class:`Table` of presented values (see :mod:`salbench.report.presentation`), or None when the run has
no rows for it ("not computed in this run"). Rendering lives in :mod:`salbench.report.render`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from salbench.report.presentation import (
    COLUMNS,
    LABEL_SET_LONG,
    LABEL_SET_SHORT,
    LABEL_SETS,
    NO_AUGMENTATION,
    RECOGNITION_KEYS,
    SUPPLEMENT_KEYS,
    TABLE1_KEYS,
    TABLE3_KEYS,
    augmentation_label,
    augmentation_order,
    method_display,
    method_order,
    natural_key,
)
from salbench.report.results import (
    families,
    not_applicable,
    presented,
    presented_higher_is_better,
    presented_intervals,
    variant_counts,
)

_METHOD_IDS = ("family", "method", "label")
NA_LABEL = " (not applicable)"
"""Appended to the label of a method that does not apply to the model (its cells are missing)."""
TITLES = {
    "table1": "Table 1. Fidelity per method (ground-truth targets)",
    "table2": "Table 2. Recognition metrics for ground-truth, predicted and least-likely targets",
    "table3": "Table 3. Robustness and complexity (ground-truth targets)",
    "table4": "Table 4. Recognition metrics under augmentations (ground-truth targets, mean over variants)",
    "table4_variants": "Table 4 (per variant). Recognition metrics under each augmentation variant",
    "supplement": "Supplementary table. Completeness gap and localization (ground-truth targets)",
}
_METHOD_DISPLAY = (("family", "Family"), ("label", "Method"))


@dataclasses.dataclass(frozen=True)
class Column:
    """A presented numeric column.

    Attributes:
        key: CSV header (``AI``, ``groundtruth_AI``, ...).
        header: Markdown header (``AI``, ``GT AI``, ...).
        latex: LaTeX header of the metric.
        decimals: decimals shown.
        higher_is_better: direction of the presented value (bars already flipped).
        metric: key of the presented metric in :data:`~salbench.report.presentation.COLUMNS`.
        group: label set or augmentation id of a grouped column (``""``: none).
        group_latex: LaTeX group header spanning consecutive columns (``""``: none).
    """

    key: str
    header: str
    latex: str
    decimals: int
    higher_is_better: bool
    metric: str = ""
    group: str = ""
    group_latex: str = ""

    def format(self, value: float) -> str:
        """The printed number, ``""`` when missing; never ``-0.0``."""
        if value is None or not math.isfinite(value):
            return ""
        text = f"{value:.{self.decimals}f}"
        return text[1:] if text.startswith("-") and float(text) == 0.0 else text


@dataclasses.dataclass(frozen=True)
class Table:
    """A table of presented values.

    Attributes:
        name: file stem (``table1``, ...).
        title: caption.
        rows: identifier columns, then one float column per :class:`Column` key (unrounded), and where
            the value has a bootstrap interval ``<key>_ci_low`` / ``<key>_ci_high`` (presented units).
        columns: the numeric columns.
        ids: identifier columns written to the CSV.
        display: ``(identifier column, header)`` pairs shown in Markdown/LaTeX; repeats of the first
            are blanked (row groups).
        best_within: identifier column whose groups get their own best value (None: whole column).
        notes: remarks printed under the table.
    """

    name: str
    title: str
    rows: pd.DataFrame
    columns: tuple[Column, ...]
    ids: tuple[str, ...] = _METHOD_IDS
    display: tuple[tuple[str, str], ...] = _METHOD_DISPLAY
    best_within: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def has_intervals(self) -> bool:
        """Whether any cell has a bootstrap interval."""
        return any(self.interval(i, c) is not None for i in self.rows.index for c in self.columns)

    def interval(self, i: object, column: Column) -> tuple[float, float] | None:
        """The presented interval of row ``i``'s ``column``, None where it has none."""
        low, high = f"{column.key}_ci_low", f"{column.key}_ci_high"
        if low not in self.rows or high not in self.rows:
            return None
        ends = float(self.rows.at[i, low]), float(self.rows.at[i, high])
        return ends if all(math.isfinite(e) for e in ends) else None

    def shown(self) -> pd.DataFrame:
        """The numeric columns rounded as printed (best values are chosen on these)."""
        return pd.DataFrame(
            {
                c.key: [float(t) if t else np.nan for t in map(c.format, self.rows[c.key])]
                for c in self.columns
            },
            index=self.rows.index,
        )

    def best(self) -> pd.DataFrame:
        """Boolean frame: the best printed value(s) of each column (ties all marked), per group."""
        shown = self.shown()
        groups = (
            [shown.index]
            if self.best_within is None
            else self.rows.groupby(self.best_within, sort=False).groups.values()
        )
        out = pd.DataFrame(False, index=shown.index, columns=shown.columns)
        for index in groups:
            part = shown.loc[index]
            for c in self.columns:
                values = part[c.key]
                if values.notna().any():
                    target = values.max() if c.higher_is_better else values.min()
                    out.loc[index, c.key] = (values == target).to_numpy()
        return out


def _column(frame: pd.DataFrame, key: str, group: str = "", short: str = "", long: str = "") -> Column:
    spec = COLUMNS[key]
    return Column(
        key=f"{group}_{key}" if group else key,
        header=f"{short} {spec.header}".strip(),
        latex=spec.latex,
        decimals=spec.decimals,
        higher_is_better=presented_higher_is_better(frame, key),
        metric=key,
        group=group,
        group_latex=long,
    )


def _method_rows(data: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    """Identifier columns + data, rows in the paper's order, rows without any value dropped; a method
    generation found not applicable to the model gets a row of missing values labelled so."""
    data = data[data.notna().any(axis=1)]
    skipped = [m for m in not_applicable(frame) if m not in data.index] if not data.empty else []
    data = pd.concat([data, pd.DataFrame(np.nan, index=skipped, columns=data.columns)]) if skipped else data
    fam = families(frame)
    order = method_order(list(data.index), fam)
    ids = pd.DataFrame(
        {
            "family": [method_display(m, fam.get(m)).family for m in order],
            "method": order,
            "label": [
                method_display(m, fam.get(m)).label + (NA_LABEL if m in skipped else "") for m in order
            ],
        }
    )
    return pd.concat([ids, data.loc[order].reset_index(drop=True)], axis=1)


def _with_intervals(
    frame: pd.DataFrame, data: pd.DataFrame, keys: Sequence[str], *where: str
) -> pd.DataFrame:
    """``data`` (method x key) joined with the keys' intervals of the same slice of the results."""
    return data.join(presented_intervals(frame, keys, *where))


def _single(frame: pd.DataFrame, name: str, keys: Sequence[str], notes: tuple[str, ...]) -> Table | None:
    data = _with_intervals(frame, presented(frame, keys, "groundtruth"), keys, "groundtruth")
    rows = _method_rows(data, frame)
    if rows.empty:
        return None
    return Table(name, TITLES[name], rows, tuple(_column(frame, k) for k in keys), notes=notes)


_BARS = "AD-bar = 100 - 100 AD and D-bar = 100 - 100 D (higher is better); AI, AG, I in %"


def table1(frame: pd.DataFrame) -> Table | None:
    """Table 1: AI, AD-bar, AG, I, D-bar, Monotonicity per method, ground-truth targets, by family."""
    return _single(frame, "table1", TABLE1_KEYS, (_BARS,))


def table3(frame: pd.DataFrame) -> Table | None:
    """Table 3: Max-/Avg-Sensitivity, Sparseness (x100), Complexity, Effective Complexity (ground truth)."""
    notes = ("MS, AS, Complexity, EC: lower is better; Sparseness (Gini, x100): higher is better",)
    return _single(frame, "table3", TABLE3_KEYS, notes)


def supplement(frame: pd.DataFrame) -> Table | None:
    """Completeness gap and localization (computed, not in the paper's tables); only columns with data."""
    data = presented(frame, SUPPLEMENT_KEYS, "groundtruth")
    keys = [k for k in SUPPLEMENT_KEYS if data[k].notna().any()]
    if not keys:
        return None
    rows = _method_rows(_with_intervals(frame, data[keys], keys, "groundtruth"), frame)
    notes = (
        "computed, not in the paper's tables; EPG, SPG, LE, OM and mask scores in %; "
        "LE, OM and the completeness gap: lower is better",
    )
    return Table(
        "supplement", TITLES["supplement"], rows, tuple(_column(frame, k) for k in keys), notes=notes
    )


def _grouped(
    frame: pd.DataFrame, parts: list[tuple[str, str, str, pd.DataFrame]]
) -> tuple[pd.DataFrame, tuple[Column, ...]]:
    """Join per-group method frames side by side; parts are (prefix, short, long, data)."""
    joined = pd.concat([d.add_prefix(f"{p}_") for p, _, _, d in parts], axis=1)
    columns = tuple(_column(frame, k, p, s, lg) for p, s, lg, _ in parts for k in RECOGNITION_KEYS)
    return _method_rows(joined, frame), columns


def table2(frame: pd.DataFrame) -> Table | None:
    """Table 2: AI, AD-bar, AG, I, D-bar for ground-truth, predicted and least-likely targets."""
    parts = []
    missing = []
    for ls in LABEL_SETS:
        data = presented(frame, RECOGNITION_KEYS, ls)
        if data.notna().any().any():
            data = _with_intervals(frame, data, RECOGNITION_KEYS, ls)
            parts.append((ls, LABEL_SET_SHORT[ls], LABEL_SET_LONG[ls], data))
        else:
            missing.append(LABEL_SET_LONG[ls].lower())
    if not parts:
        return None
    rows, columns = _grouped(frame, parts)
    notes = [_BARS, "GT: ground-truth class, Pred: top-1 predicted class, Least: least likely class"]
    if missing:
        notes.append(f"{', '.join(missing)} targets: not computed in this run")
    return Table("table2", TITLES["table2"], rows, columns, notes=tuple(notes))


def augmented_ids(frame: pd.DataFrame) -> list[str]:
    """Augmentations with ground-truth rows in this configuration, in the paper's order."""
    rows = frame[(frame["label_set"] == "groundtruth") & (frame["augmentation"] != NO_AUGMENTATION)]
    return augmentation_order(set(rows["augmentation"]))


def table4(frame: pd.DataFrame) -> Table | None:
    """Table 4: recognition metrics per augmentation, each the mean over that augmentation's variants."""
    augs = augmented_ids(frame)
    if not augs:
        return None
    parts = []
    notes = [_BARS, "each value is the mean over the augmentation's variants (seeds, sizes or angles)"]
    for aug in augs:
        parts.append(
            (
                aug,
                augmentation_label(aug),
                augmentation_label(aug),
                presented(frame, RECOGNITION_KEYS, "groundtruth", aug, None),
            )
        )
        counts = variant_counts(frame, RECOGNITION_KEYS, "groundtruth", aug)
        full = int(counts.to_numpy().max()) if counts.size else 0
        short = sorted(
            {method_display(m).label for m, row in counts.iterrows() if (row[row > 0] < full).any()}
        )
        if short:
            notes.append(f"{augmentation_label(aug)}: fewer than {full} variants for {', '.join(short)}")
    rows, columns = _grouped(frame, parts)
    return Table("table4", TITLES["table4"], rows, columns, notes=tuple(notes))


def table4_variants(frame: pd.DataFrame) -> Table | None:
    """Table 4 per variant: one block of methods per (augmentation, variant), best value per block."""
    blocks = []
    for aug in augmented_ids(frame):
        rows = frame[(frame["label_set"] == "groundtruth") & (frame["augmentation"] == aug)]
        for variant in sorted(set(rows["variant"]), key=natural_key):
            data = presented(frame, RECOGNITION_KEYS, "groundtruth", aug, variant)
            data = _with_intervals(frame, data, RECOGNITION_KEYS, "groundtruth", aug, variant)
            block = _method_rows(data, frame)
            block.insert(0, "variant", variant)
            block.insert(0, "augmentation", aug)
            block.insert(0, "setting", f"{augmentation_label(aug)} {variant}".strip())
            blocks.append(block)
    if not blocks:
        return None
    rows = pd.concat(blocks, ignore_index=True)
    return Table(
        "table4_variants",
        TITLES["table4_variants"],
        rows,
        tuple(_column(frame, k) for k in RECOGNITION_KEYS),
        ids=("augmentation", "variant", *_METHOD_IDS),
        display=(("setting", "Setting"), ("label", "Method")),
        best_within="setting",
        notes=(_BARS, "best value per column within each variant in bold"),
    )


def build_tables(frame: pd.DataFrame) -> dict[str, Table | None]:
    """Every table of one configuration, keyed by name; None where the run has no rows for it."""
    return {
        "table1": table1(frame),
        "table2": table2(frame),
        "table3": table3(frame),
        "table4": table4(frame),
        "table4_variants": table4_variants(frame),
        "supplement": supplement(frame),
    }
