"""The usage-assurance summary people read: a text file and a chart of the worst objects."""
from __future__ import annotations

from pathlib import Path

from pyspark.sql import DataFrame
from pyspark.sql import functions as F


def _worst_objects(comparison: DataFrame, n: int) -> list[str]:
    from jobs.assure import counts_as_leak

    unbilled = F.when(counts_as_leak(comparison), F.greatest("difference", F.lit(0))).otherwise(0)
    ranked = (comparison.groupBy("object_id", "metric")
              .agg(F.sum(unbilled).alias("leak"), F.sum(F.coalesce("network_value", F.lit(0))).alias("carried"))
              .withColumn("share", F.when(F.col("carried") > 0, F.col("leak") / F.col("carried")).otherwise(F.lit(1.0)))
              .where("leak > 0").orderBy(F.desc("share"), "object_id").limit(n))
    return [r.object_id for r in ranked.collect()]


def plot(comparison: DataFrame, objects: list[str], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = (comparison.where(F.col("object_id").isin(objects))
            .select("object_id", "metric", "period_start", "network_value", "cdr_value", "status", "suspect")
            .orderBy("object_id", "period_start").toPandas())
    fig, axes = plt.subplots(len(objects), 1, figsize=(10, 2.6 * len(objects)), squeeze=False, sharex=True)
    for ax, object_id in zip(axes[:, 0], objects):
        frame = rows[rows["object_id"] == object_id]
        metric = frame["metric"].iloc[0]
        ax.step(frame["period_start"], frame["network_value"].fillna(0), where="post", label="carried (counters)")
        ax.step(frame["period_start"], frame["cdr_value"], where="post", label="billed (CDRs)")
        flagged = frame[frame["status"].isin(["mismatch", "missing_cdrs"]) & ~frame["suspect"]]
        ax.scatter(flagged["period_start"], flagged["network_value"], color="red", s=12, zorder=3, label="flagged")
        ax.set_title(f"{object_id}: {metric}", fontsize=9, loc="left")
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write(folder: Path, verdict, statuses: dict, comparison: DataFrame, n_objects: int) -> Path:
    """<folder>/usage_assurance_<day>.txt (+ .png when something leaked); returns the text path."""
    folder.mkdir(parents=True, exist_ok=True)
    day = verdict.local_date.isoformat()
    text = folder / f"usage_assurance_{day}.txt"
    chart = folder / f"usage_assurance_{day}.png"
    lines = [f"usage assurance {day}", "periods by status: " + (", ".join(f"{k} {v}" for k, v in sorted(statuses.items()))
                                                               or "no counters and no CDRs"),
             *verdict.lines, *(["BREACH: " + b for b in verdict.breaches] or ["within the leakage budget"])]
    objects = _worst_objects(comparison, n_objects)
    if objects:
        plot(comparison, objects, f"carried vs billed, {day} (worst {len(objects)})", chart)
        lines.append(f"chart: {chart}")
    elif chart.exists():
        chart.unlink()
    text.write_text("\n".join(lines) + "\n")
    return text
