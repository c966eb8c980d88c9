"""A training run's log: a row per step in ``log.csv``, a row per validation in ``val.csv`` (and in
``log.csv``, its step columns empty), and the same figures as TensorBoard scalars with
``--log tensorboard`` (``WS/train/RUN/tensorboard``).

``log.csv``: ``step, stage, stage_step, loss, lr, grad_norm, samples_per_s, skipped, val_loss,
val_loss_wrong_caption, val_gap``.
``val.csv``: ``step, stage, stage_step, val_loss, val_loss_wrong_caption, val_gap`` (what
:func:`engine.s3dit.validation.validation_loss` returns); TensorBoard has them as ``val/loss``,
``val/loss_wrong_caption`` and ``val/gap`` over the global step.
"""

from __future__ import annotations

import csv
import os

VAL_FIELDS = ("step", "stage", "stage_step", "val_loss", "val_loss_wrong_caption", "val_gap")
STEP_FIELDS = (
    "step",
    "stage",
    "stage_step",
    "loss",
    "lr",
    "grad_norm",
    "samples_per_s",
    "skipped",
    *VAL_FIELDS[3:],
)


def append_csv(path: str, fields: tuple[str, ...], row: dict) -> None:
    """One row to a CSV file, with a header when the file is new (a resumed run appends)."""
    new = not os.path.exists(path)
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fields, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow(row)


class Logger:
    """One row per logged step to log.csv, one per validation to val.csv (and TensorBoard scalars)."""

    FIELDS = STEP_FIELDS

    def __init__(self, run_dir: str, log: str = "csv"):
        os.makedirs(run_dir, exist_ok=True)
        self.run_dir = run_dir
        self.tb = None
        if log == "tensorboard":
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise ValueError(
                    "--log tensorboard needs the tensorboard package (pip install 'zcurate[train]')"
                ) from e
            self.tb = SummaryWriter(os.path.join(run_dir, "tensorboard"))
        path = os.path.join(run_dir, "log.csv")
        new = not os.path.exists(path)
        fields = self.FIELDS
        if not new:  # a resumed run keeps the columns its file began with (an older run: no val_*)
            with open(path, newline="") as f:
                fields = tuple(next(csv.reader(f), None) or self.FIELDS)
        self.file = open(path, "a", newline="")  # noqa: SIM115 - closed in close()
        self.csv = csv.DictWriter(self.file, fields, extrasaction="ignore")
        if new:
            self.csv.writeheader()

    def write(self, row: dict) -> None:
        self.csv.writerow(row)
        self.file.flush()
        if self.tb is not None:
            for key in ("loss", "lr", "grad_norm", "samples_per_s"):
                self.tb.add_scalar(f"{row['stage']}/{key}", row[key], row["step"])

    def write_validation(self, row: dict) -> None:
        """A validation score (``VAL_FIELDS``) to val.csv and TensorBoard."""
        append_csv(os.path.join(self.run_dir, "val.csv"), VAL_FIELDS, row)
        self.csv.writerow(row)  # and in log.csv beside the training steps, its step columns empty
        self.file.flush()
        if self.tb is not None:
            for key in VAL_FIELDS[3:]:
                self.tb.add_scalar(f"val/{key.removeprefix('val_')}", row[key], row["step"])
            self.tb.flush()

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()
