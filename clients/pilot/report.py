"""The pilot's report: a markdown file, PNG plots and a JSON of every number."""

from __future__ import annotations

import json
import statistics
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from clients.pilot.results import PilotResult

__all__ = ["write_report"]


def _final(records: list[dict[str, Any]], key: str = "auc") -> float:
    return float(records[-1][key])


def _plots(result: PilotResult) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = {
        "auc_per_round.png": _auc_per_round,
        "roc.png": _roc,
        "auc_vs_epsilon.png": _auc_vs_epsilon,
    }
    for name, draw in plots.items():
        figure = draw(result, plt)
        figure.tight_layout()
        figure.savefig(result.config.out / name, dpi=110, bbox_inches="tight")
        plt.close(figure)
    return list(plots)


_BANK_STYLES = ("-", "--", "-.", ":")


def _legend_below(axis: Any, columns: int = 2) -> None:
    """The legend under the axes, where it cannot cover a curve."""
    axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=columns, fontsize="small")


def _auc_per_round(result: PilotResult, plt: Any) -> Any:
    from matplotlib.ticker import MaxNLocator

    names = list(result.he)
    figure, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 5.6), squeeze=False)
    for axis, name in zip(axes[0], names, strict=True):
        rounds = [r["round"] for r in result.he[name]]
        banks = list(result.alone[name].items())
        for number, (bank, records) in enumerate(banks):
            style = _BANK_STYLES[number % len(_BANK_STYLES)]
            grey = str(round(0.35 + 0.4 * number / max(1, len(banks) - 1), 2))  # each its own
            axis.plot(
                rounds, [r["auc"] for r in records], style, color=grey, lw=1, label=f"{bank} alone"
            )
        axis.plot(rounds, [r["auc"] for r in result.central[name]], "k--", label="centralised")
        axis.plot(
            rounds,
            result.plain[name].metric("auc"),
            "o",
            mfc="none",
            color="tab:orange",
            label="plaintext FedAvg",
        )
        he = [r["auc"] for r in result.he[name]]
        axis.plot(rounds, he, "-", color="tab:blue", label="HE-FedAvg (he-agg)")
        axis.set(title=f"{name}: test AUC per round", xlabel="round", ylabel="ROC AUC")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole
        _legend_below(axis, columns=2)  # two columns: side by side, the panels' legends fit
    return figure


def _roc(result: PilotResult, plt: Any) -> Any:
    from sklearn.metrics import roc_curve

    names = list(result.he)
    labels = result.data.y[result.data.test]
    figure, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 5.4), squeeze=False)
    for axis, name in zip(axes[0], names, strict=True):
        curves = {
            "HE-FedAvg": result.he[name][-1]["scores"],
            "centralised": result.central[name][-1]["scores"],
        }
        alone = result.alone[name]
        median_bank = sorted(alone, key=lambda b: _final(alone[b]))[len(alone) // 2]
        curves[f"median bank alone ({median_bank})"] = alone[median_bank][-1]["scores"]
        for label, scores in curves.items():
            fpr, tpr, _ = roc_curve(labels, scores)
            axis.plot(fpr, tpr, label=label)
        axis.plot([0, 1], [0, 1], ":", color="0.6", label="chance")
        axis.set(
            title=f"{name}: ROC on held-out {result.data.rows_noun}",
            xlabel="false positive rate",
            ylabel="true positive rate",
        )
        _legend_below(axis)
    return figure


def _auc_vs_epsilon(result: PilotResult, plt: Any) -> Any:
    from matplotlib.ticker import NullFormatter

    figure, axis = plt.subplots(figsize=(5.5, 4.8))
    for number, (name, points) in enumerate(result.dp.items()):
        color = f"C{number}"
        axis.plot([p[1] for p in points], [p[2] for p in points], "o-", color=color, label=name)
        axis.axhline(_final(result.he[name]), ls=":", color=color, label=f"{name}, no DP")
    axis.set(
        xscale="log",
        xlabel="ε (δ = 1e-5), after all rounds",
        ylabel="final test AUC",
        title="DP-FedAvg: AUC against ε",
    )
    measured = sorted({p[1] for points in result.dp.values() for p in points})
    axis.set_xticks(measured, [f"{e:.1f}" for e in measured])  # the ε values run, plainly
    axis.xaxis.set_minor_formatter(NullFormatter())
    _legend_below(axis)
    return figure


def _overhead_rows(result: PilotResult) -> list[list[str]]:
    by_round: dict[int, list[dict[str, Any]]] = {}
    for entry in result.timings:
        by_round.setdefault(int(entry["round"]), []).append(entry)
    rows = []
    for record in result.rounds_seconds:
        entries = by_round.get(int(record["round"]), [])
        uploads = [e for e in entries if "bytes" in e]
        trains = [e["train_s"] for e in entries if "train_s" in e]
        if not uploads:
            continue
        params = uploads[0]["parameters"] + 1

        def median(key: str, values: list[dict[str, Any]] = uploads) -> float:
            return float(statistics.median(e[key] for e in values))

        rows.append(
            [
                str(record["round"]),
                record["stage"],
                str(params),
                f"{uploads[0]['bytes']:,}",
                f"{4 * params:,}",
                f"{statistics.median(trains):.3f}" if trains else "—",
                f"{median('encrypt_s'):.3f}",
                f"{median('upload_s'):.3f}",
                f"{record['seconds']:.2f}",
            ]
        )
    return rows


def _markdown(result: PilotResult, plots: list[str]) -> str:
    sections = [
        _setup_section(result),
        _final_auc_section(result),
        _per_round_section(result),
        _overhead_section(result),
        _dp_section(result),
        [
            "## Acceptance",
            "",
            "| Check | Result |",
            "|---|---|",
            *(f"| {check} | {'pass' if ok else 'FAIL'} |" for check, ok in result.checks.items()),
            "",
            *(f"![{p}]({p})" for p in plots),
            "",
        ],
    ]
    return "\n\n".join("\n".join(lines) for lines in sections)


def _setup_section(result: PilotResult) -> list[str]:
    config, data, params = result.config, result.data, result.params
    rows, positive = data.rows_noun, data.positive_noun
    return [
        "# he-agg finance pilot",
        "",
        f"Data: {data.source}; {len(data.y)} {rows} ({int(data.y.sum())} {positive}, "
        f"{data.y.mean():.1%}; the models predict {positive}), {len(data.features)} features "
        f"after the public-schema encoding; {len(data.train)} training {rows} split into "
        f"{len(data.bank_names)} banks, {len(data.test)} held out for evaluation only.",
        *(f"\n**Warning:** {warning}." for warning in data.warnings),
        "",
        f"| Bank | Training {rows} | {positive[:1].upper() + positive[1:]} |",
        "|---|---|---|",
        *(
            f"| {b} | {len(data.bank_rows(b))} | {int(data.y[data.bank_rows(b)].sum())} |"
            for b in data.bank_names
        ),
        "",
        f"Protocol: aggregator, committee (3 members, any 2 decrypt) and each bank in its own "
        f"process over HTTP on loopback; parameter set N={params.poly_degree}, data primes "
        f"{list(params.prime_bits)} bits, σ_flood 2^{params.flood_bits}. Standardisation and "
        f"the class weight come from a first encrypted round of per-bank means; no raw data "
        f"is pooled. Local training: {config.local.optimizer}, lr {config.local.learning_rate}, "
        f"{config.local.epochs} epoch(s) per round, batch {config.local.batch_size}, "
        f"positive-class weight for the imbalance; {config.rounds} rounds per model; "
        f"seed {config.seed}. Whole run: {result.seconds:.0f} s.",
    ]


def _pair(record: dict[str, Any]) -> str:
    return f"{record['auc']:.4f} / {record['pr_auc']:.4f}"


def _final_auc_section(result: PilotResult) -> list[str]:
    lines = [
        "## Final test AUC and PR-AUC",
        "",
        "| Model | HE-FedAvg | Plaintext FedAvg | Centralised | Median bank alone | Best bank "
        "alone |",
        "|---|---|---|---|---|---|",
    ]
    for name in result.he:
        alone = [r[-1] for r in result.alone[name].values()]
        plain = result.plain[name].rounds[-1].metrics
        median_alone = {k: float(np.median([a[k] for a in alone])) for k in ("auc", "pr_auc")}
        best_alone = max(alone, key=lambda a: a["auc"])
        lines.append(
            f"| {name} | {_pair(result.he[name][-1])} | {_pair(plain)} | "
            f"{_pair(result.central[name][-1])} | {_pair(median_alone)} | "
            f"{_pair(best_alone)} |"
        )
    return lines


def _per_round_section(result: PilotResult) -> list[str]:
    lines = [
        "## AUC per round: HE-FedAvg against plaintext FedAvg (same seeds)",
        "",
        "| Model | Round | HE-FedAvg | Plaintext FedAvg | Difference | Centralised |",
        "|---|---|---|---|---|---|",
    ]
    for name in result.he:
        for he, twin, central in zip(
            result.he[name], result.plain[name].rounds, result.central[name], strict=True
        ):
            lines.append(
                f"| {name} | {he['round']} | {he['auc']:.6f} | "
                f"{twin.metrics['auc']:.6f} | {abs(he['auc'] - twin.metrics['auc']):.1e} "
                f"| {central['auc']:.6f} |"
            )
    return lines


def _overhead_section(result: PilotResult) -> list[str]:
    return [
        "## HE overhead per round",
        "",
        "Per bank (medians): bytes uploaded against the plaintext float32 equivalent, and "
        "seconds to train, encrypt and upload; last column: the round's wall time from "
        "opening to the published model (all processes share this machine's 2 cores).",
        "",
        "| Round | Stage | Values | HE bytes | Plain bytes | Train s | Encrypt s | "
        "Upload s | Round s |",
        "|---|---|---|---|---|---|---|---|---|",
        *("| " + " | ".join(row) + " |" for row in _overhead_rows(result)),
    ]


def _dp_section(result: PilotResult) -> list[str]:
    lines = [
        "## Differential privacy (client-level, distributed noise)",
        "",
        f"Each bank clips its update to L2 norm {result.config.dp_clip} and adds its share of "
        "Gaussian noise before encrypting; ε from dp-accounting's RDP accountant after all "
        f"rounds, δ = 1e-5. With {len(result.data.bank_names)} banks every noisy sum carries "
        "the whole noise, so client-level DP costs accuracy here; it is shown for the "
        "trade-off, not recommended at this scale.",
        "",
        "| Model | Noise multiplier | ε | Final AUC |",
        "|---|---|---|---|",
    ]
    for name, points in result.dp.items():
        lines += [f"| {name} | {s} | {e:.2f} | {a:.4f} |" for s, e, a in points]
    return lines


def _json(result: PilotResult) -> dict[str, Any]:
    def clean(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if k != "scores"} for r in records]

    return {
        "seconds": result.seconds,
        "checks": result.checks,
        "parameters": result.params.describe(),
        "he": {k: clean(v) for k, v in result.he.items()},
        "plain": {
            k: [dict(round=r.round, **r.metrics) for r in h.rounds] for k, h in result.plain.items()
        },
        "central": {k: clean(v) for k, v in result.central.items()},
        "alone": {k: {b: clean(r) for b, r in v.items()} for k, v in result.alone.items()},
        "dp": result.dp,
        "timings": result.timings,
        "rounds_seconds": result.rounds_seconds,
    }


def write_report(result: PilotResult, console: Console) -> None:
    out = result.config.out
    plots = _plots(result)
    (out / "report.md").write_text(_markdown(result, plots))
    (out / "results.json").write_text(json.dumps(_json(result), indent=2, default=float))
    table = Table(title=f"Final test AUC (held-out {result.data.rows_noun})")
    for column in ("model", "HE-FedAvg", "plaintext FedAvg", "centralised", "median bank alone"):
        table.add_column(column, justify="right")
    for name in result.he:
        alone = [r[-1]["auc"] for r in result.alone[name].values()]
        table.add_row(
            name,
            f"{_final(result.he[name]):.4f}",
            f"{result.plain[name].rounds[-1].metrics['auc']:.4f}",
            f"{_final(result.central[name]):.4f}",
            f"{np.median(alone):.4f}",
        )
    console.print(table)
    for check, ok in result.checks.items():
        console.print(f"  {'[green]pass[/]' if ok else '[red]FAIL[/]'}  {check}")
    console.print(
        f"report: {out / 'report.md'} (plots and results.json beside it); "
        f"{result.seconds:.0f} s in all"
    )
