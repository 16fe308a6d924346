"""`erasekit eval` for class-conditional models: base and erased under identical seeds, one report."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..io import atomic_dir, fingerprint_state_dict
from ..pipelines.adapters import adapter_for
from ..pipelines.loading import load_any_pipeline
from .class_conditional import ClassEvalConfig, ClassEvalResult, evaluate_class_conditional
from .classifier import load_classifier
from .grids import image_grid, side_by_side
from .report import accuracy_chart, format_summary, write_report


@dataclass
class EvalReport:
    """Metrics of the evaluated model (`after`) and of its baseline (`before`, if any)."""

    before: dict[str, Any] | None
    after: dict[str, Any]
    report_dir: Path | None

    def summary(self) -> str:
        return format_summary(self.before, self.after)


def load_class_pipeline(model):
    pipe = load_any_pipeline(model)
    if adapter_for(pipe).family != "class-conditional":
        raise ConfigError(f"model '{model}' is a {type(pipe).__name__}; this evaluator needs a class-conditional model")
    return pipe


def write_class_report(out_dir: Path, after: ClassEvalResult, before: ClassEvalResult | None,
                       forget: Sequence[int], settings: dict[str, Any], columns: int = 10) -> None:
    """grid.png (base | erased), accuracy.png, report.json and report.md."""
    n = len(after.metrics["per_class_accuracy"])
    rows = [str(c) for c in range(n)]
    panels = []
    if before is not None:
        panels.append(image_grid(before.images, before.labels, rows, columns, title="base", highlight_rows=forget))
    panels.append(image_grid(after.images, after.labels, rows, columns,
                             title="erased" if before is not None else "model", highlight_rows=forget))
    out_dir.mkdir(parents=True, exist_ok=True)
    side_by_side(panels).save(out_dir / "grid.png")
    accuracy_chart(out_dir / "accuracy.png", before.metrics["per_class_accuracy"] if before else None,
                   after.metrics["per_class_accuracy"], forget)
    write_report(out_dir, before.metrics if before else None, after.metrics, settings)


def run_class_evaluation(pipe, baseline_pipe, forget: Sequence[int], config: ClassEvalConfig,
                         out_dir: Path | None, settings: dict[str, Any]) -> EvalReport:
    """Evaluate `pipe` (and `baseline_pipe` with the same seeds) and write the report to `out_dir`."""
    from ..pipelines.digits import load_digits_16

    forget = adapter_for(pipe).check_forget(list(forget))
    classifier = load_classifier(config.classifier)
    real = load_digits_16()
    after = evaluate_class_conditional(pipe, classifier, forget, config, real.test_images, real.test_labels)
    before = None
    if baseline_pipe is not None:
        before = evaluate_class_conditional(baseline_pipe, classifier, forget, config, real.test_images,
                                            real.test_labels)
    settings = {
        **settings,
        "forget": forget,
        "model_fingerprint": fingerprint_state_dict(adapter_for(pipe).denoiser.state_dict()),
        "baseline_fingerprint": fingerprint_state_dict(adapter_for(baseline_pipe).denoiser.state_dict()) if baseline_pipe else None,
        "eval": asdict(config),
        "real_data": "digits test split (360 images)",
    }
    if out_dir is not None:
        write_class_report(out_dir, after, before, forget, settings)
    return EvalReport(before=before.metrics if before else None, after=after.metrics, report_dir=out_dir)


def evaluate(model, baseline=None, forget: Sequence[int] = (0,), output_dir: str | os.PathLike | None = None,
             config: ClassEvalConfig | None = None, overwrite: bool = False, **overrides) -> EvalReport:
    """Evaluate a class-conditional model, optionally against its base under the same seeds.

    Args:
        model: a pipeline, a directory, a Hub id or `bundled:NAME`.
        baseline: the model before erasure, evaluated on identical classes and seeds.
        forget: the erased class ids (UA is measured on them, RA on the rest).
        output_dir: where to write report.json, report.md, grid.png and accuracy.png.
        config: sampling and classifier settings; keyword `overrides` replace its fields.
    """
    config = ClassEvalConfig(**{**(asdict(config) if config else {}), **overrides})
    pipe = load_class_pipeline(model)
    base = load_class_pipeline(baseline) if baseline is not None else None
    settings = {"model": str(model), "baseline": str(baseline) if baseline is not None else None}
    if output_dir is None:
        return run_class_evaluation(pipe, base, forget, config, None, settings)
    with atomic_dir(output_dir, overwrite) as tmp:
        report = run_class_evaluation(pipe, base, forget, config, tmp, settings)
    report.report_dir = Path(output_dir)
    return report
