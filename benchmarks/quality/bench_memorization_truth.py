"""Ground-truth memorization by leave-subset-out retraining, and how well each proxy ranks it.

The subset S is the 144 training digits that sample unlearning forgets (`forget_samples: 0.1`, seed 0).
S is cut into four seeded quarters A, B, C, D, and four models are trained from scratch exactly as the
bundled base is (`train_digits_unet`: 4000 steps, seed 0), each without half of S: AB, CD, AC, BD. Every
image of S is left out of two models and seen by the other two. A fifth model, trained on all the
data with the per-image running loss recorded, is the model the proxies score.

An image's memorization is how much lower its loss is in the models that saw it (Feldman & Zhang 2020):

    mem(i) = mean_{m: i not in m} l_m(i) - mean_{m: i in m} l_m(i),    l_m(i) = L_m(i) - mean_test L_m,

with `L_m(i)` the image's conditional denoising error (the same noise draws in every model) and the
mean over the 360 held-out test digits removing each model's overall level. Each pair (AB, CD) and
(AC, BD) alone gives an estimate in which every image is out once and in once; their Spearman
correlation is the reliability of the ground truth itself.

    python benchmarks/quality/bench_memorization_truth.py train   # five trainings, ~11 min each alone
    python benchmarks/quality/bench_memorization_truth.py score   # proxies, ground truth, Spearman
    python benchmarks/quality/bench_memorization_truth.py report  # memorization.md from the results
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parents[1] / "results"
MODELS = Path("outputs/memorization-truth")
LEFT_OUT = {"all": "", "AB": "AB", "CD": "CD", "AC": "AC", "BD": "BD"}
PAIRS = (("AB", "CD"), ("AC", "BD"))
SPLIT_SEED = 1
TRUTH_SEED, PROXY_SEED = 500_000, 0  # disjoint noise for the ground truth and the proxies


def subset_and_quarters(count: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    from erasekit.erase.membership import pick_samples

    subset = pick_samples(count, 0.1, 0)
    order = torch.randperm(len(subset), generator=torch.Generator().manual_seed(SPLIT_SEED))
    return subset, {name: subset[idx].sort().values for name, idx in zip("ABCD", order.tensor_split(4))}


def train(names: list[str]) -> None:
    from erasekit.erase.memorization import TRAINING_LOSSES, TrainingLosses
    from erasekit.io import atomic_dir
    from erasekit.pipelines.digits import build_digits_schedulers, load_digits_16
    from erasekit.pipelines.pipeline_class_conditional import ClassConditionalPipeline
    from erasekit.recipes.train_base import train_digits_unet

    data = load_digits_16()
    _, quarters = subset_and_quarters(len(data.train_labels))
    for name in names:
        if (MODELS / name).exists():
            print(f"{name}: exists, kept")
            continue
        dropped = torch.cat([quarters[q] for q in LEFT_OUT[name]]) if LEFT_OUT[name] else torch.empty(0, dtype=torch.long)
        keep = torch.ones(len(data.train_labels), dtype=torch.bool)
        keep[dropped] = False
        recorder = TrainingLosses(int(keep.sum())) if name == "all" else None
        started = time.time()
        unet, _ = train_digits_unet(data.train_images[keep], data.train_labels[keep], 0, 4000, recorder=recorder)
        with atomic_dir(MODELS / name) as tmp:
            ClassConditionalPipeline(unet=unet, scheduler=build_digits_schedulers()[1]).save_pretrained(tmp)
            (tmp / "left_out.json").write_text(json.dumps({"left_out": dropped.sort().values.tolist(),
                                                           "seconds": round(time.time() - started, 1)}) + "\n")
            if recorder is not None:
                recorder.save(tmp / TRAINING_LOSSES, {"split": "train"})
        print(f"{name}: trained without {len(dropped)} images in {time.time() - started:.0f} s", flush=True)


def score(draws: int, holdout_steps: int) -> None:
    from bench_proxy_reliability import spearman  # this folder is on sys.path when run as a script

    from erasekit.erase.memorization import TRAINING_LOSSES, branch_statistics, holdout_divergence
    from erasekit.erase.tasks import ClassConditionalTask
    from erasekit.pipelines.digits import load_digits_16
    from erasekit.pipelines.loading import load_pipeline

    started = time.time()
    data = load_digits_16()
    subset, quarters = subset_and_quarters(len(data.train_labels))
    x, c = data.train_images[subset], data.train_labels[subset]
    test_ids = torch.arange(len(data.test_labels)) + 100_000  # noise ids apart from the training positions
    pipes = {name: load_pipeline(str(MODELS / name)) for name in LEFT_OUT}
    task = ClassConditionalTask.for_pipeline(pipes["all"], data.train_images, data.train_labels, forget=[])

    def errors(unet, images, labels, ids) -> torch.Tensor:
        return branch_statistics(unet.eval(), task, images, labels, TRUTH_SEED, draws, 32, ids,
                                 conditional_only=True)["conditional"]

    level, error = {}, {}
    for name, pipe in pipes.items():
        level[name] = float(errors(pipe.unet, data.test_images, data.test_labels, test_ids).mean())
        error[name] = errors(pipe.unet, x, c, subset) - level[name]
        print(f"{name}: test error {level[name]:.5f}, subset error {float(error[name].mean()) + level[name]:.5f} "
              f"({time.time() - started:.0f} s)", flush=True)
    out_of = {name: torch.isin(subset, torch.cat([quarters[q] for q in LEFT_OUT[name]])) for name in PAIRS[0] + PAIRS[1]}

    def memorization(names) -> torch.Tensor:
        stacked = torch.stack([error[n] for n in names])
        out = torch.stack([out_of.get(n, torch.zeros(len(subset), dtype=torch.bool)) for n in names])
        return (stacked * out).sum(0) / out.sum(0) - (stacked * ~out).sum(0) / (~out).sum(0)

    pair_truth = [memorization(pair) for pair in PAIRS]
    truth = memorization(PAIRS[0] + PAIRS[1])
    with_all = memorization(PAIRS[0] + PAIRS[1] + ("all",))

    unet = pipes["all"].unet.eval()
    stats = branch_statistics(unet, task, x, c, PROXY_SEED, draws, 32, subset)
    recorded = json.loads((MODELS / "all" / TRAINING_LOSSES).read_text())["mean_loss"]
    proxy_started = time.time()
    holdout = holdout_divergence(unet, task, x, c, data.test_images, data.test_labels, PROXY_SEED, draws, 32,
                                 holdout_steps, 1e-4)
    proxies = {"cfg_gain": stats["unconditional"] - stats["conditional"], "cond_magnitude": stats["difference"],
               "training_loss": torch.tensor(recorded, dtype=torch.float64)[subset],
               "holdout": holdout, "loss": stats["conditional"]}
    rows = [{"proxy": name, "spearman_truth": round(spearman(value, truth), 4),
             "spearman_pair_1": round(spearman(value, pair_truth[0]), 4),
             "spearman_pair_2": round(spearman(value, pair_truth[1]), 4)} for name, value in proxies.items()]
    for row in rows:
        print(row)
    record = {
        "date": time.strftime("%Y-%m-%d"), "machine": platform.node(), "threads": torch.get_num_threads(),
        "command": "python benchmarks/quality/bench_memorization_truth.py train && ... score",
        "subset": "the 144 images of forget_samples: 0.1, forget_samples_seed: 0 (configs/digits-samples.yaml)",
        "quarters_seed": SPLIT_SEED, "models": {name: LEFT_OUT[name] or "none left out" for name in LEFT_OUT},
        "training": "train_digits_unet: 4000 steps, batch 128, seed 0, as the bundled base",
        "draws": draws, "truth_seed": TRUTH_SEED, "proxy_seed": PROXY_SEED, "holdout_steps": holdout_steps,
        "holdout_lr": 1e-4, "holdout_seconds": round(time.time() - proxy_started, 1),
        "test_error_per_model": {k: round(v, 6) for k, v in level.items()},
        "truth_mean": round(float(truth.mean()), 6), "truth_std": round(float(truth.std()), 6),
        "truth_positive_share": round(float((truth > 0).double().mean()), 4),
        "truth_reliability_spearman_pairs": round(spearman(*pair_truth), 4),
        "truth_spearman_with_all_model_as_member": round(spearman(truth, with_all), 4),
        "proxy_note": "the proxies score the model trained on all the data ('all'); 'loss' is its own conditional "
                      "error, the plain loss-attack score",
        "rows": rows,
        "between_proxies": {f"{a}~{b}": round(spearman(proxies[a], proxies[b]), 4)
                            for i, a in enumerate(proxies) for b in list(proxies)[i + 1:]},
        "seconds": round(time.time() - started, 1),
        "samples": [{"index": int(subset[k]), "label": int(c[k]), "truth": round(float(truth[k]), 6),
                     **{name: round(float(v[k]), 6) for name, v in proxies.items()}} for k in range(len(subset))],
    }
    path = RESULTS / "memorization-truth-digits.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"written to {path}")
    report(record)


def within_class(samples: list[dict]) -> dict[str, float]:
    """Per proxy, the correlation of within-digit ranks (each digit's ranks centred and scaled to [-1/2, 1/2])."""
    labels = torch.tensor([s["label"] for s in samples])

    def ranks(values: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(len(values), dtype=torch.float64)
        for c in labels.unique():
            m = labels == c
            r = torch.argsort(torch.argsort(values[m])).double()
            out[m] = (r - r.mean()) / max(1, int(m.sum()) - 1)
        return out

    truth = ranks(torch.tensor([s["truth"] for s in samples], dtype=torch.float64))
    names = [k for k in samples[0] if k not in ("index", "label", "truth")]
    out = {}
    for name in names:
        r = ranks(torch.tensor([s[name] for s in samples], dtype=torch.float64))
        out[name] = float((r * truth).sum() / (r.norm() * truth.norm()))
    return out


def report(record: dict) -> None:
    """benchmarks/quality/memorization.md from the results record."""
    lines = [
        "# Memorization proxies against leave-subset-out retraining (digits)", "",
        f"Written by `python benchmarks/quality/bench_memorization_truth.py score` from "
        f"`benchmarks/results/memorization-truth-digits.json` (run of {record['date']}, {record['threads']}-thread CPU); "
        "the five models come from `... train`. The method is in the script's docstring.", "",
        f"- Subset: {record['subset']}; {record['draws']} noise draws per image and model.",
        f"- Ground truth: mean {record['truth_mean']:.5f}, std {record['truth_std']:.5f}; "
        f"{record['truth_positive_share']:.0%} of the images have a lower loss in the models that saw them.",
        f"- Its reliability, the Spearman correlation of the two independent pair estimates (AB/CD and AC/BD): "
        f"**{record['truth_reliability_spearman_pairs']:.2f}**. By the attenuation bound, no score can correlate "
        f"with one pair's estimate much above its square root, "
        f"{record['truth_reliability_spearman_pairs'] ** 0.5:.2f}.",
        "- The all-data model came out bit-identical to `bundled:digits-cfg` (same recipe and seed), so the "
        "proxies score the shipped model.",
        f"- With the all-data model as a fifth member, the truth has a Spearman correlation of "
        f"{record['truth_spearman_with_all_model_as_member']:.2f} with the four-model truth.",
        "- Test error per model (the level subtracted): " + ", ".join(
            f"{k} {v:.5f}" for k, v in record["test_error_per_model"].items()) + ".", "",
        "| proxy (on the all-data model) | Spearman with truth | with pair AB/CD | with pair AC/BD | within digit |",
        "|---|---|---|---|---|",
    ]
    within = within_class(record["samples"])
    lines += [f"| {r['proxy']} | {r['spearman_truth']:.3f} | {r['spearman_pair_1']:.3f} | {r['spearman_pair_2']:.3f} "
              f"| {within[r['proxy']]:.3f} |" for r in record["rows"]]
    lines += ["", "\"Within digit\" correlates ranks taken within each digit's images (centred and scaled per digit, "
              "then pooled), so that a proxy cannot score by telling easy digits from hard ones.", "",
              "`loss` is the model's own conditional error on the image, the score of the plain loss attack; "
              f"`holdout` fine-tuned {record['holdout_steps']} steps at lr {record['holdout_lr']} on the 360 test "
              f"digits ({record['holdout_seconds']:.0f} s with its two scorings).", "",
              "Spearman between proxies:", ""]
    lines += [f"- {k}: {v:.3f}" for k, v in record["between_proxies"].items()]
    (Path(__file__).parent / "memorization.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("phase", choices=("train", "score", "report"))
    parser.add_argument("--models", default=",".join(LEFT_OUT))
    parser.add_argument("--draws", type=int, default=128)
    parser.add_argument("--holdout-steps", type=int, default=200)
    args = parser.parse_args()
    if args.phase == "train":
        train(args.models.split(","))
    elif args.phase == "score":
        score(args.draws, args.holdout_steps)
    else:
        report(json.loads((RESULTS / "memorization-truth-digits.json").read_text()))


if __name__ == "__main__":
    main()
