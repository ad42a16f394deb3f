"""Training at three data sizes: our collaborative part against the ``implicit`` library's ALS, same interactions.

Real data: the NSMC reviews (``../shared/data/nsmc/reviews.tsv.gz``; a movie is an item, a review
an implicit positive weighted rating / 10), read directly, without Spark ingestion. Time split as
in the data's README: train before 2015-02-01, test 2015-02-01 .. 2015-04-30; ids with more than
500 training reviews are dropped from both sides. The three sizes are training windows ending at
the cut (by default the last 4 months, the last 2 years, all history).

Per size, on the same user × item matrix:

- **ours**: ``placerec.model.train.fit_cf`` in the embedded default (``train_cf_engine=implicit``,
  ``Settings()`` factors, iterations and alpha), once per weight of ``train_als_reg_grid``, each in a
  fresh process; the CF part of a training run is those fits (the validation grid) plus two at the
  chosen weight (the test and full fits);
- **baseline**: ``references.ImplicitALS`` (same factors and alpha, reg 0.05, 15 iterations), in a
  fresh process;
- **Spark road** (``--spark``): ``fit_cf`` with ``train_cf_engine=spark`` on a local session.

Each fitted model is scored for the evaluation users (top 10, seen items excluded): NDCG@10 and
Recall@10, with the popularity of the last 30 days of training for context. Figure: ours at the
middle weight of the grid, fit seconds at the largest size; baseline: implicit's; target: ratio
≤ 2 (the quality issue's training-cost target, one fit against one fit); the whole run's CF part is
reported beside it.

Run: ``uv run --frozen python bench/train_scale.py [--spark]`` (writes ``bench/results/train_scale.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gc
import gzip
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

import common

NAME = "train_scale"
DATA = common.REPO_ROOT.parent / "shared" / "data" / "nsmc" / "reviews.tsv.gz"
CUT = date(2015, 2, 1)
TEST_END = date(2015, 5, 1)  # exclusive: the file ends on 2015-04-30
HEAVY_REVIEWS = 500
POPULAR_DAYS = 30
K = 10
SCORE_BATCH = 2048
IMPLICIT_ITERATIONS = 15
SAMPLE_EVERY_S = 0.2
MIB = 2**20


@dataclass(frozen=True)
class Review:
    author: str
    movie: str
    rating: int
    day: str  # YYYY-MM-DD sorts as a date


@dataclass
class Split:
    """One training window: the matrix both models fit, and what the evaluation needs."""

    label: str
    start: str
    reviews: int
    train: sp.csr_matrix
    eval_users: np.ndarray
    truth: list[np.ndarray]
    popular_30d: np.ndarray


def read_reviews(path: Path) -> list[Review]:
    """Every review of the TSV (review_id, author, movie_id, rating, date, review)."""
    csv.field_size_limit(sys.maxsize)
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader)
        return [Review(row[1], row[2], int(row[3]), row[4]) for row in reader]


def months_before(day: date, months: int) -> date:
    total = day.year * 12 + day.month - 1 - months
    return date(total // 12, total % 12 + 1, day.day)


def build_split(label: str, start: str, train_rows: list[Review], test_rows: list[Review], earlier: Any) -> Split:
    """The window ``[start, CUT)`` as a csr user × item matrix (rating / 10; a repeated pair keeps its
    highest rating), and the test positives of its users: test-period items present in the window
    that the user had not reviewed at any time before the cut."""
    window = [r for r in train_rows if r.day >= start]
    weight: dict[tuple[str, str], int] = {}
    for r in window:
        key = (r.author, r.movie)
        weight[key] = max(weight.get(key, 0), r.rating)
    users = {a: i for i, a in enumerate(sorted({a for a, _ in weight}))}
    items = {m: i for i, m in enumerate(sorted({m for _, m in weight}))}
    u = np.fromiter((users[a] for a, _ in weight), dtype=np.int32, count=len(weight))
    i = np.fromiter((items[m] for _, m in weight), dtype=np.int32, count=len(weight))
    w = np.fromiter(weight.values(), dtype=np.float32, count=len(weight)) / 10.0
    train = sp.csr_matrix((w, (u, i)), shape=(len(users), len(items)), dtype=np.float32)

    held: dict[int, set[int]] = defaultdict(set)
    for r in test_rows:
        if r.author in users and r.movie in items and r.movie not in earlier[r.author]:
            held[users[r.author]].add(items[r.movie])
    eval_users = np.array(sorted(held), dtype=np.int64)
    truth = [np.array(sorted(held[x]), dtype=np.int64) for x in eval_users]

    popular_from = (CUT - timedelta(days=POPULAR_DAYS)).isoformat()
    popular = Counter(items[m] for a, m in {(r.author, r.movie) for r in window if r.day >= popular_from})
    popular_30d = np.zeros(len(items), dtype=np.float32)
    popular_30d[list(popular)] = list(popular.values())
    return Split(label, start, len(window), train, eval_users, truth, popular_30d)


def status_mib(pid: int, key: str) -> float | None:
    """``VmRSS``/``VmHWM`` of a process in MiB (None once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def reset_peak(pid: int) -> bool:
    """Reset the kernel's peak-RSS mark (``VmHWM``) of ``pid``; False where the kernel refuses."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def driver_jvm_pid(spark: Any) -> int | None:
    """The Spark driver JVM: the py4j gateway's process, else the ``java`` descendant of this process."""
    proc = getattr(spark.sparkContext._gateway, "proc", None)
    pid = getattr(proc, "pid", None)
    with contextlib.suppress(OSError):
        if pid and Path(f"/proc/{pid}/comm").read_text().strip() == "java":
            return int(pid)
    children: dict[int, list[int]] = defaultdict(list)
    names: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            head, tail = (entry / "stat").read_text().rsplit(")", 1)
            names[int(entry.name)] = head.split("(", 1)[1]
            children[int(tail.split()[1])].append(int(entry.name))
    todo = [os.getpid()]
    while todo:
        for child in children[todo.pop()]:
            if names.get(child) == "java":
                return child
            todo.append(child)
    return None


@contextlib.contextmanager
def sampled_peaks(pids: dict[str, int], every_s: float = SAMPLE_EVERY_S) -> Iterator[dict[str, float]]:
    """Highest ``VmRSS`` (MiB) of each process, sampled every ``every_s`` while inside."""
    peaks = {name: status_mib(pid, "VmRSS") or 0.0 for name, pid in pids.items()}
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(every_s):
            for name, pid in pids.items():
                peaks[name] = max(peaks[name], status_mib(pid, "VmRSS") or 0.0)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peaks
    finally:
        stop.set()
        thread.join()
        for name, pid in pids.items():
            peaks[name] = max(peaks[name], status_mib(pid, "VmRSS") or 0.0)


def recommend_from_factors(
    user_f: np.ndarray, item_f: np.ndarray, train: sp.csr_matrix, users: np.ndarray
) -> np.ndarray:
    """Top-K per user from ``user_f @ item_f.T``, seen items excluded, ``SCORE_BATCH`` users at a time."""
    from placerec.model.references import top_k

    out = np.empty((users.size, K), dtype=np.int64)
    for start in range(0, users.size, SCORE_BATCH):
        chunk = users[start : start + SCORE_BATCH]
        out[start : start + chunk.size] = top_k(user_f[chunk] @ item_f.T, train, chunk, K)
    return out


def quality(recs: np.ndarray, truth: list[np.ndarray]) -> dict[str, float]:
    from placerec.model.metrics import ndcg_at_k, recall_at_k

    return {f"ndcg@{K}": round(ndcg_at_k(recs, truth, K), 5), f"recall@{K}": round(recall_at_k(recs, truth, K), 5)}


def spark_work(spark: Any, group: str) -> dict[str, int]:
    """Jobs, stages and tasks that Spark ran for a job group."""
    tracker = spark.sparkContext.statusTracker()
    jobs = tracker.getJobIdsForGroup(group)
    stages = sorted({sid for job in jobs if (info := tracker.getJobInfo(job)) for sid in info.stageIds})
    tasks = sum(info.numTasks for sid in stages if (info := tracker.getStageInfo(sid)))
    return {"jobs": len(jobs), "stages": len(stages), "tasks": tasks}


def fit_spark(
    spark: Any, jvm: int | None, train: sp.csr_matrix, settings: Any, group: str
) -> tuple[np.ndarray, np.ndarray, dict]:
    """``fit_cf`` on the Spark road timed, with the driver JVM's and this process's peak RSS and CPU,
    its phases and Spark work."""
    from pyspark.ml.recommendation import ALS

    from placerec.model.train import fit_cf

    gc.collect()
    me = os.getpid()
    pids = {"python": me} | ({"jvm": jvm} if jvm else {})
    before = {name: status_mib(pid, "VmRSS") or 0.0 for name, pid in pids.items()}
    exact = all(reset_peak(pid) for pid in pids.values())
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    calls: dict[str, list[tuple[float, float]]] = {"to_dataframe": [], "als_fit": [], "factors_to_arrow": []}
    with contextlib.ExitStack() as stack:
        # The concrete (classic) session and DataFrame classes: Spark 4's pyspark.sql names are their bases.
        stack.enter_context(common.timed_calls(type(spark), "createDataFrame", calls["to_dataframe"]))
        stack.enter_context(common.timed_calls(ALS, "fit", calls["als_fit"]))
        stack.enter_context(common.timed_calls(type(spark.range(1)), "toArrow", calls["factors_to_arrow"]))
        sampled = stack.enter_context(sampled_peaks(pids))
        spark.sparkContext.setJobGroup(group, f"{NAME}: fit_cf (spark)")
        began = time.monotonic()
        user_f, item_f = fit_cf(spark, train, settings, settings.train_spark_als_reg)
        seconds = time.monotonic() - began
    peaks = {name: status_mib(pid, "VmHWM") if exact else sampled[name] for name, pid in pids.items()}
    phases = {name: round(sum(b - a for a, b in spans), 3) for name, spans in calls.items()}
    phases["python_conversion"] = round(seconds - sum(phases.values()), 3)
    python_delta = (peaks["python"] or 0.0) - before["python"]
    jvm_peak = peaks.get("jvm")
    figures = {
        "fit_seconds": round(seconds, 3),
        "peak_rss_mib": round((jvm_peak or 0.0) + python_delta, 1),
        "fit_phases_s": phases,
        "jvm_rss_before_fit_mib": round(before["jvm"], 1) if jvm else None,
        "jvm_peak_rss_mib": round(jvm_peak, 1) if jvm_peak else None,
        "jvm_peak_rss_sampled_mib": round(sampled["jvm"], 1) if jvm else None,
        "python_rss_before_fit_mib": round(before["python"], 1),
        "python_peak_delta_mib": round(python_delta, 1),
        "python_peak_delta_sampled_mib": round(sampled["python"] - before["python"], 1),
        "peak_from": "VmHWM reset before the fit (exact)" if exact else f"VmRSS sampled every {SAMPLE_EVERY_S} s",
        "cpu_seconds": {name: round(cpu_seconds(pid) - cpu_before[name], 2) for name, pid in pids.items()},
        "spark": spark_work(spark, group),
    }
    return user_f, item_f, figures


def fit_fresh(train: sp.csr_matrix, params: dict[str, Any], folder: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """A fit in a fresh Python process, so that its peak RSS is this fit's own: ``params["reg"]`` set:
    ours (``fit_cf``, the embedded default's engine), else ``ImplicitALS(**params)``."""
    src, dst = folder / "train.npz", folder / "factors.npz"
    sp.save_npz(src, train, compressed=False)
    done = subprocess.run(
        [sys.executable, __file__, "--implicit-worker", str(src), str(dst), json.dumps(params)],
        check=True,
        capture_output=True,
        text=True,
    )
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    with np.load(dst) as saved:
        return saved["user_factors"], saved["item_factors"], figures


def implicit_worker(src: str, dst: str, params: str) -> None:
    """The child side of :func:`fit_fresh`: load, fit, save the factors, print one JSON line.

    The peak is ``VmHWM``, this process's own high-water mark (reset just before the fit where the
    kernel allows), not ``ru_maxrss``: Linux carries the parent's high-water mark over fork and exec
    into ``ru_maxrss``, so a child of a large parent would report the parent's peak.
    """
    import implicit.cpu.als  # noqa: F401  imported before the baseline, like everything the fit needs
    import threadpoolctl  # noqa: F401

    from placerec.model.references import ImplicitALS
    from placerec.model.train import fit_cf
    from placerec.settings import Settings

    me = os.getpid()
    train = sp.load_npz(src).tocsr()
    gc.collect()
    exact = reset_peak(me)
    rss_before = status_mib(me, "VmRSS") or 0.0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    chosen = json.loads(params)
    began = time.monotonic()
    if "reg" in chosen:
        user_f, item_f = fit_cf(None, train, Settings(train_cf_engine="implicit"), chosen["reg"])  # type: ignore[arg-type]
    else:
        model = ImplicitALS(**chosen).fit(train)
        user_f, item_f = model.user_factors_, model.item_factors_
    seconds = time.monotonic() - began
    after = resource.getrusage(resource.RUSAGE_SELF)
    peak = status_mib(me, "VmHWM") or 0.0
    np.savez(dst, user_factors=user_f, item_factors=item_f)
    figures = {
        "fit_seconds": round(seconds, 3),
        "peak_rss_mib": round(peak - rss_before, 1),
        "process_rss_before_fit_mib": round(rss_before, 1),
        "process_peak_rss_mib": round(peak, 1),
        "peak_from": "VmHWM of a fresh process, reset before the fit, minus its VmRSS then"
        if exact
        else "VmHWM of a fresh process (since its start) minus its VmRSS before the fit",
        "cpu_seconds": round(after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime, 2),
    }
    print(json.dumps(figures))


def score(user_f: np.ndarray, item_f: np.ndarray, split: Split) -> dict[str, float]:
    began = time.monotonic()
    recs = recommend_from_factors(user_f, item_f, split.train, split.eval_users)
    return {"score_seconds": round(time.monotonic() - began, 3)} | quality(recs, split.truth)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="NSMC reviews.tsv.gz")
    parser.add_argument(
        "--months", default="4,24,0", help="training windows ending at the cut, in months (0 = all history)"
    )
    parser.add_argument("--spark", action="store_true", help="also time the Spark road (fit_cf, engine spark)")
    parser.add_argument("--implicit-worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.implicit_worker:
        implicit_worker(*args.implicit_worker)
        return
    common.quiet_logs()
    if not args.data.is_file():
        print(f"{NAME}: NSMC data not found at {args.data} (../shared/data/nsmc next to the repo); nothing measured")
        return

    import implicit
    import pyspark

    from placerec.model.references import Popularity, recommend
    from placerec.model.train import IMPLICIT_REFERENCE_REG, cf_regs
    from placerec.settings import Settings

    wall_began = time.monotonic()
    settings = Settings()
    regs = cf_regs(settings)
    middle = regs[len(regs) // 2]
    implicit_params = {
        "factors": settings.train_factors,
        "regularization": IMPLICIT_REFERENCE_REG,
        "alpha": settings.train_als_alpha,
        "iterations": IMPLICIT_ITERATIONS,
        "random_state": 42,
    }

    began = time.monotonic()
    reviews = read_reviews(args.data)
    read_s = time.monotonic() - began
    cut, test_end = CUT.isoformat(), TEST_END.isoformat()
    train_rows = [r for r in reviews if r.day < cut]
    per_author = Counter(r.author for r in train_rows)
    heavy = {a for a, n in per_author.items() if n > HEAVY_REVIEWS}
    train_rows = [r for r in train_rows if r.author not in heavy]
    test_rows = [r for r in reviews if cut <= r.day < test_end and r.author not in heavy]
    earlier: dict[str, set[str]] = defaultdict(set)
    for r in train_rows:
        earlier[r.author].add(r.movie)

    splits = []
    for months in (int(m) for m in args.months.split(",")):
        start = months_before(CUT, months).isoformat() if months else min(r.day for r in train_rows)
        label = f"last {months} months" if months else "all history"
        splits.append(build_split(label, start, train_rows, test_rows, earlier))
        s = splits[-1]
        print(
            f"{NAME}: {label} ({start} .. {CUT - timedelta(days=1)}): {s.train.nnz:,} interactions, "
            f"{s.train.shape[0]:,} users, {s.train.shape[1]:,} items, {s.eval_users.size:,} eval users",
            flush=True,
        )
    del reviews

    sizes: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix=f"placerec-bench-{NAME}-") as tmp:
        for s in splits:
            load = [round(x, 2) for x in os.getloadavg()]
            ours: dict[str, Any] = {}
            for reg in regs:
                user_f, item_f, figures = fit_fresh(s.train, {"reg": reg}, Path(tmp))
                ours[f"{reg:g}"] = figures | score(user_f, item_f, s)
            user_f, item_f, ref = fit_fresh(s.train, implicit_params, Path(tmp))
            ref |= score(user_f, item_f, s)
            popular = recommend(Popularity(s.popular_30d).fit(s.train), s.train, s.eval_users, K)
            grid_s = sum(f["fit_seconds"] for f in ours.values())
            sizes.append(
                {
                    "window": s.label,
                    "start": s.start,
                    "end_exclusive": cut,
                    "reviews": s.reviews,
                    "interactions": int(s.train.nnz),
                    "users": int(s.train.shape[0]),
                    "items": int(s.train.shape[1]),
                    "eval_users": int(s.eval_users.size),
                    "test_positives": int(sum(t.size for t in s.truth)),
                    "loadavg_1_5_15_at_start": load,
                    "ours_by_reg": ours,
                    "ours": ours[f"{middle:g}"],
                    "ours_cf_part_of_a_run_s": round(grid_s + 2 * ours[f"{middle:g}"]["fit_seconds"], 3),
                    "implicit": ref,
                    "popularity_30d": quality(popular, s.truth),
                }
            )
            print(
                f"{NAME}: {s.label}: ours fit {ours[f'{middle:g}']['fit_seconds']:.1f} s (reg {middle:g}), "
                f"implicit fit {ref['fit_seconds']:.1f} s",
                flush=True,
            )

    spark_figures: dict[str, Any] = {}
    if args.spark:
        with common.private_home(NAME):
            from placerec.settings import get_settings
            from placerec.spark import get_spark

            spark_settings = replace(get_settings(), train_cf_engine="spark")
            began = time.monotonic()
            spark = get_spark("bench-train-scale")
            spark_figures["spark_start_s"] = round(time.monotonic() - began, 3)
            jvm = driver_jvm_pid(spark)
            try:
                # The first ALS fit of a session pays class loading and JIT: a small one runs first.
                smallest = splits[0].train
                warm = smallest[: max(1, smallest.shape[0] // 10)]
                warm_figures = fit_spark(spark, jvm, warm, spark_settings, "warmup")[2]
                spark_figures["warmup"] = {"interactions": int(warm.nnz)} | {
                    key: warm_figures[key] for key in ("fit_seconds", "fit_phases_s", "cpu_seconds", "spark")
                }
                for s, row in zip(splits, sizes, strict=True):
                    user_f, item_f, road = fit_spark(spark, jvm, s.train, spark_settings, s.label)
                    row["spark_road"] = road | score(user_f, item_f, s)
                    print(f"{NAME}: {s.label}: Spark road fit {road['fit_seconds']:.1f} s", flush=True)
            finally:
                spark.stop()
            spark_figures |= {
                "spark_master": spark_settings.spark_master,
                "spark_driver_memory": spark_settings.spark_driver_memory,
                "train_spark_als_reg": spark_settings.train_spark_als_reg,
                "pyspark": pyspark.__version__,
                "jvm_pid_found": jvm is not None,
            }

    largest = sizes[-1]
    ours_s, ref_s = largest["ours"]["fit_seconds"], largest["implicit"]["fit_seconds"]
    ratio = round(ours_s / ref_s, 3)
    result: dict[str, Any] = {
        "name": NAME,
        "figure": ours_s,
        "unit": f"wall seconds of fit_cf (embedded default: the implicit engine, reg {middle:g}) at the largest "
        f"size ({largest['window']}, {largest['interactions']:,} interactions)",
        "baseline": ref_s,
        "baseline_is": "wall seconds of the implicit library's ALS (references.ImplicitALS, reg "
        f"{IMPLICIT_REFERENCE_REG}, {IMPLICIT_ITERATIONS} iterations) on the same matrix",
        "ratio": ratio,
        "target": 2.0,
        "meets_target": ratio <= 2.0,
        "target_note": "the quality issue's training cost: the CF part's fit at most 2x the implicit ALS fit time; "
        "ours_cf_part_of_a_run_s is the whole run's CF part (the validation grid, then the test and full fits)",
        "cf_part_of_a_run_ratio": round(largest["ours_cf_part_of_a_run_s"] / ref_s, 3),
        "params": {
            "data": str(args.data),
            "cut": cut,
            "test": [cut, (TEST_END - timedelta(days=1)).isoformat()],
            "heavy_ids_over_training_reviews": HEAVY_REVIEWS,
            "heavy_ids_dropped": len(heavy),
            "heavy_reviews_dropped": sum(per_author[a] for a in heavy),
            "weight": "rating / 10; a (user, item) pair reviewed twice keeps its highest rating",
            "test_positives": "a window user's test-period items that are in the window and that the user had "
            "not reviewed at any time before the cut",
            "popularity_30d": f"distinct reviewers per item over the last {POPULAR_DAYS} days of training",
            "k": K,
            "score_batch": SCORE_BATCH,
            "ours": {
                "train_cf_engine": "implicit",
                "train_factors": settings.train_factors,
                "train_als_iterations": settings.train_als_iterations,
                "train_als_reg_grid": settings.train_als_reg_grid,
                "train_als_alpha": settings.train_als_alpha,
                "train_seed": settings.train_seed,
            },
            "implicit": implicit_params | {"num_threads": "all cores", "version": implicit.__version__},
            "spark_road": spark_figures or "not measured (run with --spark)",
        },
        "read_tsv_s": round(read_s, 3),
        "sizes": sizes,
        "total_wall_s": round(time.monotonic() - wall_began, 1),
        "notes": (
            "fit_seconds: wall time of the fit call only, each in a fresh process (peak_rss_mib: its VmHWM, reset "
            "before the fit, minus its RSS then). ours_by_reg: one fit per weight of the validation grid; 'ours' "
            "is the middle weight. score_seconds: user_factors @ item_factors.T and references.top_k, "
            f"{SCORE_BATCH} users a batch, for the eval users. spark_road (with --spark): fit_cf on a local "
            "session, the driver JVM's peak RSS + this process's delta. Eval users differ by size: a test user "
            "counts only if the window has them."
        ),
    }
    path = common.write_result(result)

    print(f"{'window':<16}{'interactions':>13} | " + " | ".join(f"{'reg ' + format(r, 'g'):>22}" for r in regs)
          + f" | {'implicit':>22}" + (f" | {'Spark road':>22}" if args.spark else "") + f" | {'pop30':>6}")  # fmt: skip
    for row in sizes:
        sides = [row["ours_by_reg"][f"{r:g}"] for r in regs] + [row["implicit"]]
        sides += [row["spark_road"]] if args.spark else []
        cells = [f"{m['fit_seconds']:>7.1f} s {m[f'ndcg@{K}']:>6.4f} {m.get('peak_rss_mib', 0):>5.0f}M" for m in sides]
        print(f"{row['window']:<16}{row['interactions']:>13,} | " + " | ".join(cells)
              + f" | {row['popularity_30d'][f'ndcg@{K}']:>6.4f}")  # fmt: skip
    print(
        f"{NAME}: fit at {largest['interactions']:,} interactions: ours {ours_s:.1f} s vs implicit {ref_s:.1f} s "
        f"(ratio {ratio:.2f}, target <= 2: {'met' if ratio <= 2 else 'NOT met'}); the run's CF part "
        f"{largest['ours_cf_part_of_a_run_s']:.1f} s ({result['cf_part_of_a_run_ratio']:.2f}x); "
        f"total {result['total_wall_s']:.0f} s -> {path}"
    )


if __name__ == "__main__":
    main()
