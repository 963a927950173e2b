"""Command-line options shared by several subcommands, and their help texts."""

from __future__ import annotations

import argparse

from fxquant.cli.data_source import DataOptions
from fxquant.cli.text import DEFAULT_TOKENIZER
from fxquant.zoo.photos import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "DATA_HELP",
    "EXIT_CODES_HELP",
    "MODEL_HELP",
    "HelpFormatter",
    "add_common_options",
    "add_data_options",
    "data_options",
]


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the line breaks of descriptions and epilogs; wraps option help at 100 columns."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=100)


MODEL_HELP = """\
MODEL is one of
  package.module:callable     a function returning an nn.Module, or a (module, example_inputs)
                              pair, e.g. fxquant.zoo:efficientnet_lite0
  path/to/file.py:callable    the same, from a Python file
  ...:callable(args)          with literal arguments: 'models.py:build(depth=18)'
  model.pt2 / model.fxq       a program saved by torch.export.save / fxquant.save (the graph
                              accepts exactly the input shapes it was captured with)"""

DATA_HELP = """\
DATA is one of
  path/to/folder/             images (jpg, png, ...): RGB, shorter side resized to
                              IMAGE_SIZE/0.875, centre crop IMAGE_SIZE, normalised with
                              --mean/--std (default ImageNet); needs Pillow
  sentences.txt               one sentence per line, tokenized by --tokenizer (default the zoo's
                              MiniLM-L6 tokenizer, giving (input_ids, attention_mask)); all
                              sentences are padded to one length, at most --max-length tokens
  tensors.pt                  torch.save of a tensor [N, ...] (one model input), a list/tuple of
                              tensors (one per positional input) or a dict (values in order);
                              read with torch.load(weights_only=True)
  tensors.safetensors         tensors in the order listed in metadata 'inputs' ("a,b"), else by
                              name (natural sort)
  package.module:callable     returns a tensor [N, ...], a tuple of tensors, or an iterable of
                              such batches, e.g. 'fxquant.zoo:imagenet_photos(64)'
Samples are split into batches of exactly --batch-size (captured graphs have static shapes);
trailing samples that do not fill a batch are left out, with a note on stderr."""

EXIT_CODES_HELP = """\
exit codes:
  0  success
  1  internal error (a bug: please report it with the output of --debug)
  2  usage error (unknown option, missing argument)
  3  bad input: unreadable/missing model or data, shape mismatch, tampered .fxq file, ...
     (the message says what and what to do; --debug adds the traceback)
  4  the quantized model misses --accuracy-budget (its files are written anyway)"""


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """``--no-progress`` and ``--debug``, accepted by every subcommand."""
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bars on stderr (they need tqdm; default: shown)")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback when something fails (default: one message)")


def add_data_options(parser: argparse.ArgumentParser, *, limit_flag: str, limit_help: str) -> None:
    """Options that say how DATA becomes batches."""
    group = parser.add_argument_group("data options")
    group.add_argument("--batch-size", type=int, default=8, metavar="B",
                       help="samples per batch (default: 8; a saved program's own batch size wins)")
    group.add_argument(limit_flag, type=int, default=None, metavar="N", dest="limit", help=limit_help)
    group.add_argument("--image-size", type=int, default=224, metavar="PX",
                       help="side of the square crop for image folders (default: 224)")
    group.add_argument("--mean", type=float, nargs=3, default=list(IMAGENET_MEAN), metavar=("R", "G", "B"),
                       help="per-channel mean subtracted from images in [0, 1] "
                       f"(default: ImageNet {' '.join(map(str, IMAGENET_MEAN))})")
    group.add_argument("--std", type=float, nargs=3, default=list(IMAGENET_STD), metavar=("R", "G", "B"),
                       help="per-channel std images are divided by "
                       f"(default: ImageNet {' '.join(map(str, IMAGENET_STD))}; 1 1 1 to disable)")
    group.add_argument("--tokenizer", default=None, metavar="MODULE:CALLABLE",
                       help=f"tokenizer for .txt data (default: {DEFAULT_TOKENIZER})")
    group.add_argument("--max-length", type=int, default=128, metavar="T",
                       help="maximum tokens per sentence for .txt data (default: 128)")


def data_options(args: argparse.Namespace, *, limit: int | None) -> DataOptions:
    """The :class:`DataOptions` the parsed arguments ask for."""
    return DataOptions(
        limit=limit,
        image_size=args.image_size,
        mean=tuple(args.mean),
        std=tuple(args.std),
        tokenizer=args.tokenizer,
        max_length=args.max_length,
        progress=not args.no_progress,
    )
