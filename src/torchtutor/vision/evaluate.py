"""`torchtutor vision evaluate`: overall and per-class accuracy, and a confusion-matrix PNG."""

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from torchtutor.runtime.device import resolve_device
from torchtutor.runtime.errors import UserError
from torchtutor.runtime.files import atomic_write
from torchtutor.runtime.report import dumps as report_json
from torchtutor.vision.data import load_data
from torchtutor.vision.inference import LoadedRun, load_run, predict_logits


@dataclass
class EvaluateConfig:
    run: str
    data: str | None = None
    json: bool = False
    device: str = "auto"


def confusion_matrix(labels: torch.Tensor, predicted: torch.Tensor, num_classes: int,
                     ) -> torch.Tensor:
    """counts[true, predicted]."""
    flat = labels.long() * num_classes + predicted.long()
    return torch.bincount(flat, minlength=num_classes**2).view(num_classes, num_classes)


def accuracy_report(confusion: torch.Tensor, classes: list[str]) -> dict:
    totals = confusion.sum(1)
    right = confusion.diag()
    per_class = {name: (float(right[i] / totals[i]) if totals[i] else None)
                 for i, name in enumerate(classes)}
    return {"accuracy": float(right.sum() / max(1, int(totals.sum()))),
            "per_class": per_class, "images": int(totals.sum())}


def save_confusion_png(confusion: torch.Tensor, classes: list[str], path: Path,
                       title: str) -> Path:
    import matplotlib
    matplotlib.use("Agg")  # no display needed; must precede pyplot
    import matplotlib.pyplot as plt

    n = len(classes)
    size = max(5.0, 0.5 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(confusion.numpy(), cmap="Blues")
    ax.set_xticks(range(n), classes, rotation=45, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= 20:
        peak = int(confusion.max()) or 1
        for i in range(n):
            for j in range(n):
                value = int(confusion[i, j])
                ax.text(j, i, str(value), ha="center", va="center", fontsize=7,
                        color="white" if value > peak / 2 else "black")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    return path


def evaluate_run(loaded: LoadedRun, data_spec: str, out_png: Path) -> dict:
    data = load_data(data_spec, loaded.valid_fraction, loaded.seed)
    if data.classes != loaded.classes:
        raise UserError(f"{data_spec} has classes {data.classes[:4]}..., the run was trained "
                        f"on {loaded.classes[:4]}...")
    logits = predict_logits(loaded.model, data.test_images, loaded.mean, loaded.std,
                            loaded.device, loaded.dtype, tta=loaded.tta,
                            translate=loaded.tta_translate, channels_last=loaded.channels_last,
                            desc="evaluate")
    confusion = confusion_matrix(data.test_labels, logits.argmax(1), len(data.classes))
    report = accuracy_report(confusion, data.classes)
    save_confusion_png(confusion, data.classes, out_png,
                       f"{loaded.model_name}: {report['accuracy']:.1%} on {report['images']} "
                       "test images")
    report["confusion_matrix"] = confusion.tolist()
    report["confusion_png"] = os.fspath(out_png)
    return report


def main(config: EvaluateConfig) -> int:
    device = resolve_device(config.device)
    loaded = load_run(config.run, device)
    report = evaluate_run(loaded, config.data or loaded.data,
                          Path(config.run) / "confusion.png")
    if config.json:
        print(report_json(report))
        return 0
    print(f"accuracy {report['accuracy']:.2%} on {report['images']} test images")
    width = max(len(name) for name in report["per_class"])
    for name, value in report["per_class"].items():
        shown = "n/a" if value is None else f"{value:.2%}"
        print(f"  {name:<{width}}  {shown}")
    print(f"confusion matrix: {report['confusion_png']}")
    return 0
