"""``cifar10-train``: train, export, evaluate and compare (the lab's experiment).

    cifar10-train train   --run-dir runs/improved [--recipe improved|lab] [--epochs N] [--data DIR|fetch]
    cifar10-train train   --run-dir runs/airbench94 --arch airbench94     (its own recipe, airbench94)
    cifar10-train export  --run-dir runs/improved --output models/cifar10-cnn.onnx [--checkpoint best|last]
                          [--tta none|flip|flip-translate]     (test-time augmentation: airbench94 only)
    cifar10-train evaluate --model models/cifar10-cnn.onnx --data DIR [--validation | --test | --val-of RUN_DIR]
    cifar10-train compare --out runs/compare [--epochs 100] [--no-train]   (the lab's recipe)

Bad flag values, problems with the data or the run folder, and an export whose ONNX answers
differ from Keras' print one ``cifar10-train: error:`` line and exit 2.

TensorFlow runs with its oneDNN kernels on and its C++ log at ERROR unless the environment
says otherwise (``TF_ENABLE_ONEDNN_OPTS``, ``TF_CPP_MIN_LOG_LEVEL``; ``tensorflow_env``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from cifar10_training import config as config_module
from cifar10_training import tensorflow_env

log = logging.getLogger("training")

PROG = "cifar10-train"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_LEVEL_ENV = "CIFAR10_LOG_LEVEL"
CONFIG_COMMANDS = ("train", "compare")


def _default_text(name: str, recipe: str) -> str:
    """The flag's default under ``recipe``, and under the other recipes where they differ."""
    values = {r: config_module.for_recipe(r).to_dict()[name] for r in config_module.RECIPE_NAMES}
    if len(set(map(repr, values.values()))) == 1:
        return f"default: {values[recipe]!r}"
    return "default: " + ", ".join(f"{v!r} ({r})" for r, v in values.items())


def _add_config_flags(parser: argparse.ArgumentParser, recipe: str, recipe_by_arch: bool = False) -> None:
    """A flag per config field; with ``recipe_by_arch`` the recipe defaults to the one of
    ``--arch`` (``config.ARCH_RECIPES``), else to ``recipe``."""
    group = parser.add_argument_group(f"training config (defaults: the {recipe!r} recipe unless --recipe says otherwise)")
    defaults = config_module.for_recipe(recipe)
    for field in config_module.fields():
        flag = "--" + field.name.replace("_", "-")
        default = getattr(defaults, field.name)
        if field.name == "recipe":
            by_arch = "; ".join(f"{r} for --arch {a}" for a, r in config_module.ARCH_RECIPES.items())
            group.add_argument(flag, dest=field.name, choices=config_module.RECIPE_NAMES,
                               default=None if recipe_by_arch else recipe,
                               help=f"{field.metadata['help']} (default: {by_arch if recipe_by_arch else recipe}; "
                                    "docs/training.md)")
            continue
        if field.name == "arch":
            group.add_argument(flag, dest=field.name, choices=config_module.ARCHS, default=None,
                               help=f"{field.metadata['help']} (default: {default})")
            continue
        help_text = f"{field.metadata['help']} ({_default_text(field.name, recipe)})"
        if isinstance(default, bool):
            group.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction, default=None,
                               help=help_text)
        else:
            group.add_argument(flag, dest=field.name, type=type(default), default=None, help=help_text)


def config_from_args(args: argparse.Namespace, **overrides) -> config_module.TrainConfig:
    """The flags given, over the defaults of ``--recipe``; ValueError for unusable values."""
    values = {f.name: getattr(args, f.name) for f in config_module.fields()
              if f.name != "recipe" and getattr(args, f.name, None) is not None}
    values.update(overrides)
    return config_module.for_recipe(args.recipe or config_module.default_recipe(values.get("arch")), **values)


def _cmd_train(args: argparse.Namespace) -> int:
    from cifar10_training import run

    result = run.train_run(args.config, args.run_dir, export=not args.no_export, tta=args.tta)
    log.info("run finished: %s", result)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from cifar10_training import run

    output = args.output
    if args.repository_model is not None:
        from cifar10_training.export import next_version

        output = next_version(args.repository_model)
    path = run.export_run(args.run_dir, output, args.checkpoint, args.tta)
    log.info("exported %s", path)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from cifar10_training import run

    run.evaluate_command(args.model, args.data, args.split, args.val_of, args.out, args.validation, args.test)
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from cifar10_training import run

    run.compare(args.config, args.out, train=not args.no_train)
    return 0


def _cmd_quantize(args: argparse.Namespace) -> int:
    from cifar10_training import quantize

    record = quantize.quantize(args.model, args.data, args.output, args.calibration_images, args.seed,
                               reduce_range=not args.full_range)
    print(json.dumps(record, indent=1, sort_keys=True))
    return 0


def _positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_tta_flag(parser: argparse.ArgumentParser) -> None:
    from cifar10_training.tta import MODES

    parser.add_argument("--tta", choices=MODES, default="none",
                        help="test-time augmentation inside the exported graph (networks with a logits layer: "
                             "airbench94): flip averages the image and its mirror, flip-translate six views "
                             "(docs/training.md) (default: none)")


def build_parser() -> argparse.ArgumentParser:
    """``cifar10-train`` and its subcommands; every flag has a help text."""
    parser = argparse.ArgumentParser(prog=PROG, description="Train, export, evaluate and compare CIFAR-10 networks: "
                                                            "the lab's seed CNN and airbench94.")
    parser.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, default=None,
                        help=f"logging threshold [env {LOG_LEVEL_ENV}; default INFO]")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", help="what to do")

    p = sub.add_parser("train", help="train one arm (resumes if the run folder has checkpoints), then export and evaluate")
    p.add_argument("--run-dir", type=Path, required=True, help="folder of the run (created; resumed if it exists)")
    p.add_argument("--no-export", action="store_true", help="stop after fitting")
    _add_tta_flag(p)
    _add_config_flags(p, config_module.DEFAULT_RECIPE, recipe_by_arch=True)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("export", help="export a run's best checkpoint to ONNX (with the parity check), "
                                      "evaluated on its validation and test parts")
    p.add_argument("--run-dir", type=Path, required=True, help="the run folder whose checkpoint to export")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--output", type=Path, default=None, help="the ONNX file to write (default: RUN_DIR/model.onnx)")
    where.add_argument("--repository-model", type=Path, default=None, metavar="MODEL_DIR",
                   help="instead of --output: a model's folder in a model repository "
                        "(models/cifar10-cnn): the export becomes its next version, "
                        "MODEL_DIR/<N+1>/model.onnx, which a server polling the repository "
                        "loads and serves")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best",
                   help="best: the epoch with the highest validation accuracy; last: the newest epoch")
    _add_tta_flag(p)
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("evaluate", help="accuracy, per-class accuracy and confusion matrix of an ONNX model, via onnxruntime")
    p.add_argument("--model", type=Path, required=True, help="the ONNX model to evaluate")
    p.add_argument("--data", required=True,
                   help="image folder, cifar-10-python.tar.gz, cifar-10-batches-py/, fetch (as train's "
                        "default: $CIFAR10_DATA, else the official archive fetched once) or keras")
    p.add_argument("--split", default="train", choices=["train", "test"], help="which split of an archive")
    part = p.add_mutually_exclusive_group()
    part.add_argument("--val-of", type=Path, default=None, help="evaluate only the validation images of this run folder")
    part.add_argument("--validation", action="store_true",
                      help="evaluate only the model's validation part, recomputed from its metadata")
    part.add_argument("--test", action="store_true",
                      help="evaluate only the model's test part, recomputed from its metadata")
    p.add_argument("--out", type=Path, default=None, help="folder for evaluation.json and confusion_matrix.png")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("compare", help="the lab's experiment: train without and with augmentation, overlay the curves")
    p.add_argument("--out", type=Path, required=True, help="folder holding both runs and the comparison")
    p.add_argument("--no-train", action="store_true",
                   help="train nothing: draw the figure and table from the runs as they are now")
    _add_config_flags(p, "lab")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("quantize", help="INT8 copy of an exported model (onnxruntime static "
                                        "quantization), evaluated on its validation split")
    p.add_argument("--model", type=Path, required=True, help="the exported FP32 model")
    p.add_argument("--data", required=True,
                   help="the data set it was trained on (fingerprint checked): a path, or fetch / keras")
    p.add_argument("--output", type=Path, required=True, help="the INT8 model to write (atomically)")
    p.add_argument("--calibration-images", type=_positive_int, default=512,
                   help="seeded sample of the training part of the split (never validation images)")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration sample")
    p.add_argument("--full-range", action="store_true",
                   help="8-bit weights instead of 7: only for serving on CPUs with VNNI; without it "
                        "int8 products can saturate (see training/cifar10_training/quantize.py)")
    p.set_defaults(func=_cmd_quantize)
    return parser


def _log_level(parser: argparse.ArgumentParser, flag: str | None) -> str:
    """``--log-level``, else ``$CIFAR10_LOG_LEVEL``, else INFO; a bad environment value is a
    usage error (the flag's own values are checked by argparse)."""
    if flag:
        return flag
    level = os.environ.get(LOG_LEVEL_ENV) or "INFO"
    if level.upper() not in LOG_LEVELS:
        parser.error(f"{LOG_LEVEL_ENV}: invalid log level {level!r} (choose from {', '.join(LOG_LEVELS)})")
    return level.upper()


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; expected failures are one error line and exit 2 (130 on Ctrl-C)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = _log_level(parser, args.log_level)
    if args.command in CONFIG_COMMANDS:
        try:
            args.config = config_from_args(args)
        except ValueError as exc:
            parser.error(str(exc))
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    tensorflow_env.apply_defaults()
    from cifar10_core.errors import ModelLoadError
    from cifar10_training.data import DataError
    from cifar10_training.export import ExportParityError
    from cifar10_training.train import RunConfigMismatch
    from cifar10_training.tta import UnsupportedTTA

    try:
        return args.func(args)
    except (DataError, RunConfigMismatch, ModelLoadError, ExportParityError, UnsupportedTTA) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume from the last finished epoch", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
