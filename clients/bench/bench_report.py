"""Tables and plots for ``he-agg bench`` (markdown and PNG beside suite.json)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["markdown_tables", "write_bench_report"]

STAGES = [
    "encode",
    "encrypt",
    "serialize",
    "upload",
    "aggregate",
    "partial_decrypt",
    "combine_decode",
]


def _ms(stats: dict[str, float]) -> str:
    return f"{stats['median'] * 1e3:.1f} ({stats['min'] * 1e3:.1f}–{stats['max'] * 1e3:.1f})"


def markdown_tables(result: dict[str, Any]) -> str:
    env, params = result["environment"], result["parameter_set"]
    lines = [
        f"Measured {env['date']} on {env['cpu']} ({env['cores']} cores), {env['platform']}; "
        f"python {env['python']}, numpy {env['numpy']}, tenseal {env['tenseal']}, torch "
        f"{env['torch']}. Median (min–max) of {result['repeats']} repeats after a warm-up. "
        f"he-agg set `{params['name']}`: N={params['N']}, data primes "
        f"{params['data_prime_bits']} bits, K_max={params['K_max']}, committee 2-of-3.",
        "",
        *_stage_table(result["cells"]),
        "",
        *_bytes_table(result["cells"]),
    ]
    if "end_to_end" in result:
        lines += ["", *_end_to_end_table(result["end_to_end"])]
    return "\n".join(lines)


def _stage_table(cells: list[dict[str, Any]]) -> list[str]:
    lines = [
        "### Time per stage, milliseconds (he-agg)",
        "",
        "| Parameters | Clients | " + " | ".join(STAGES) + " | round | plaintext round | HE ÷ "
        "plaintext |",
        "|---" * (len(STAGES) + 5) + "|",
    ]
    for cell in cells:
        he, plain = cell["he_agg"]["seconds"], cell["plaintext"]["seconds"]
        lines.append(
            f"| {cell['parameters']:,} | {cell['clients']} | "
            + " | ".join(_ms(he[s]) for s in STAGES)
            + f" | {_ms(he['round'])} | {_ms(plain['round'])} | "
            f"{cell['ratio_to_plaintext']:.1f}× |"
        )
    return lines


def _bytes_table(cells: list[dict[str, Any]]) -> list[str]:
    lines = [
        "### Bytes and the TenSEAL baselines (round = encrypt + serialize + "
        "deserialize-and-add every client; no network)",
        "",
        "| Parameters | Clients | he-agg B/param | plaintext B/param | NVFlare B/param | "
        "depth-0 B/param | he-agg share B/param | he-agg round ms | NVFlare round ms | "
        "depth-0 round ms |",
        "|---" * 10 + "|",
    ]
    for cell in cells:
        size = cell["parameters"]
        lines.append(
            f"| {size:,} | {cell['clients']} | {cell['he_agg']['upload_bytes'] / size:.2f} | "
            f"{cell['plaintext']['upload_bytes'] / size:.2f} | "
            f"{cell['tenseal_nvflare']['upload_bytes'] / size:.2f} | "
            f"{cell['tenseal_depth0']['upload_bytes'] / size:.2f} | "
            f"{cell['he_agg']['share_bytes'] / size:.2f} | "
            f"{_ms(cell['he_agg']['seconds']['round'])} | "
            f"{_ms(cell['tenseal_nvflare']['seconds']['round'])} | "
            f"{_ms(cell['tenseal_depth0']['seconds']['round'])} |"
        )
    return lines


_WORKLOADS = {
    "article_cnn": "article CNN (431k parameters, 3 clients)",
    "finance_pilot": "finance pilot, logistic regression (5 banks)",
    "resnet18_synthetic": "ResNet-18 (11.2M parameters), synthetic 32×32 images, 3 clients",
}
_PHASE_LABELS = {
    "uploads": "open → last upload stored",
    "close_to_set": "→ decryption set named",
    "endorsements": "→ last endorsement",
    "shares": "→ last decryption share",
    "combine_publish": "→ model published",
}


def _seconds(stats: dict[str, float]) -> str:
    return f"{stats['median']:.2f} ({stats['min']:.2f}–{stats['max']:.2f})"


def _end_to_end_table(end_to_end: dict[str, Any]) -> list[str]:
    lines = [
        "### End-to-end slowdown of one federated round through the service",
        "",
        "Seconds per round (training included, evaluation not); every column the same "
        "workload, seeds and clients. *Plaintext via the service*: the same rounds uploaded "
        "to a plaintext federation on the same kind of server (the like-for-like baseline); "
        "*in process*: FedAvg with no service at all.",
        "",
        "| Workload | HE, proofs | HE, no proofs | plaintext via the service | plaintext in "
        "process | HE ÷ plaintext via the service | no proofs ÷ plaintext via the service | "
        "HE ÷ plaintext in process |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, entry in end_to_end.items():
        lines.append(
            f"| {_WORKLOADS.get(key, key)} | {_seconds(entry['he_round_s'])} | "
            f"{_seconds(entry['he_no_proofs_round_s'])} | {_seconds(entry['plain_round_s'])} | "
            f"{_seconds(entry['plain_inprocess_round_s'])} | {entry['slowdown']:.1f}× | "
            f"{entry['slowdown_no_proofs']:.1f}× | {entry['slowdown_inprocess']:.1f}× |"
        )
    lines += [
        "",
        "**The HE round's critical path** (with proofs), from the server's log (UTC to the "
        "millisecond), median seconds of each phase; each ends at the last event of its "
        "kind:",
        "",
        "| Workload | " + " | ".join(_PHASE_LABELS.values()) + " |",
        "|---|" + "---|" * len(_PHASE_LABELS),
    ]
    for key, entry in end_to_end.items():
        phases = entry.get("he_phases_s", {})
        cells = [
            f"{phases[name]['median']:.2f}" if name in phases else "–" for name in _PHASE_LABELS
        ]
        lines.append(f"| {_WORKLOADS.get(key, key)} | " + " | ".join(cells) + " |")
    return lines


def _plots(result: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = {"stages.png": _stages_plot, "bytes.png": _bytes_plot, "scaling.png": _scaling_plot}
    for name, draw in plots.items():
        figure = draw(result["cells"], plt)
        figure.tight_layout()
        figure.savefig(out / name, dpi=110, bbox_inches="tight")  # outside legends too
        plt.close(figure)


def _stages_plot(cells: list[dict[str, Any]], plt: Any) -> Any:
    labels = [f"{c['parameters'] // 1000}k×{c['clients']}" for c in cells]
    figure, axis = plt.subplots(figsize=(max(6, len(cells) * 0.9) + 2, 4.5))
    bottom = [0.0] * len(cells)
    for stage in STAGES:
        heights = [c["he_agg"]["seconds"][stage]["median"] for c in cells]
        axis.bar(labels, heights, bottom=bottom, label=stage)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    axis.plot(
        labels,
        [c["plaintext"]["seconds"]["round"]["median"] for c in cells],
        "k_",
        markersize=18,
        label="plaintext round",
    )
    axis.set(
        yscale="log",
        ylabel="seconds (median)",
        xlabel="parameters × clients",
        title="he-agg round, stage by stage",
    )
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars
    return figure


def _bytes_plot(cells: list[dict[str, Any]], plt: Any) -> Any:
    largest = max(c["parameters"] for c in cells)
    chosen = [c for c in cells if c["parameters"] == largest]
    figure, axis = plt.subplots(figsize=(6, 4))
    names = ["he-agg", "plaintext", "TenSEAL NVFlare", "TenSEAL depth 0"]
    keys = ["he_agg", "plaintext", "tenseal_nvflare", "tenseal_depth0"]
    axis.bar(
        names,
        [chosen[0][k]["upload_bytes"] / largest for k in keys],
        color=["tab:blue", "0.6", "tab:red", "tab:orange"],
    )
    axis.set(ylabel="upload bytes per parameter", title=f"{largest:,} parameters")
    return figure


def _round_seconds(row: list[dict[str, Any]], kind: str) -> list[float]:
    return [c[kind]["seconds"]["round"]["median"] for c in row]


def _scaling_plot(cells: list[dict[str, Any]], plt: Any) -> Any:
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 5))
    for clients in sorted({c["clients"] for c in cells}):
        row = [c for c in cells if c["clients"] == clients]
        sizes = [c["parameters"] for c in row]
        left.plot(sizes, _round_seconds(row, "he_agg"), "o-", label=f"he-agg, {clients} clients")
        left.plot(
            sizes, _round_seconds(row, "plaintext"), "x--", label=f"plaintext, {clients} clients"
        )
    left.set(
        xscale="log",
        yscale="log",
        xlabel="parameters",
        ylabel="round seconds",
        title="scaling with parameters",
    )
    left.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=3)
    for size in sorted({c["parameters"] for c in cells}):
        row = [c for c in cells if c["parameters"] == size]
        counts = [c["clients"] for c in row]
        right.plot(
            counts, _round_seconds(row, "he_agg"), "o-", label=f"he-agg, {size:,} parameters"
        )
    right.set(
        xscale="log",
        yscale="log",
        xlabel="clients",
        ylabel="round seconds",
        title="scaling with clients",
    )
    right.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=3)
    return figure


def write_bench_report(result: dict[str, Any], out: Path) -> None:
    (out / "suite.md").write_text(markdown_tables(result) + "\n")
    _plots(result, out)
