#!/usr/bin/env python3
"""Prepare DSN separation data: train/valid CSVs and fixed overlap/noise test sets.

Thin command-line wrapper around
:func:`speechbrain_dsn.data.prepare.prepare_dsn_data` (paper Section IV-A).

Examples::

    python prepare_data.py --corpus folder --data_folder data/demo --save_folder results/data
    python prepare_data.py --corpus wham --data_folder /corpora/wsj0-mix \\
        --noise_folder /corpora/wham_noise --wham_folder /corpora/wham --save_folder results/wham
"""

import argparse
import logging
import sys

from speechbrain_dsn.data.prepare import CORPORA, prepare_dsn_data


def _boolean(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


def _parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", choices=list(CORPORA), required=True)
    parser.add_argument("--data_folder", required=True, help="corpus root")
    parser.add_argument("--save_folder", required=True, help="output folder for CSVs and test audio")
    parser.add_argument("--sample_rate", type=int, default=8000)
    parser.add_argument(
        "--noise_folder",
        default=None,
        help="wham_noise folder (wham corpus); noise files to add (folder corpus; needed for --num_spks 1)",
    )
    parser.add_argument(
        "--num_spks",
        type=int,
        default=None,
        help="sources per mixture: 1 (enhancement in noise), 2, 3 (default: the corpus's; folder: 2)",
    )
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--num_train", type=int, default=None, help="pairs (folder default: 24; else all)")
    parser.add_argument("--num_valid", type=int, default=None, help="pairs (folder default: 4; else all)")
    parser.add_argument(
        "--num_test", type=int, default=None, help="pairs per test condition (folder default: 3; else all)"
    )
    parser.add_argument("--test_overlaps", type=float, nargs="+", default=[1.0, 0.75, 0.5, 0.25])
    parser.add_argument("--test_noise_activities", type=float, nargs="+", default=[1.0, 0.5, 0.0])
    parser.add_argument(
        "--max_source_seconds",
        type=float,
        default=None,
        help="cap on each source's speech (folder default: 5 s; else none)",
    )
    parser.add_argument(
        "--libri2mix_noisy", action="store_true", help="use the LibriMix noise folder (Libri2Mix, Libri3Mix)"
    )
    parser.add_argument("--audio_subtype", default="FLOAT", help="soundfile subtype of test WAVs")
    parser.add_argument(
        "--official_test",
        type=_boolean,
        default=True,
        help="also list the released test set as test_official.csv (True/False; default True)",
    )
    parser.add_argument(
        "--wham_folder", default=None, help="released WHAM! mixtures (holding wav8k/min/tt/mix_both); default: searched"
    )
    return parser.parse_args(argv)


def main(argv=None):
    """Parse the arguments and run the preparation."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = _parse_args(argv)
    try:
        paths = prepare_dsn_data(**vars(args))
    except (OSError, ValueError, RuntimeError) as err:
        # bad input (missing folder, unusable files, wrong layout): the message names it
        print(f"prepare_data.py: error: {err}", file=sys.stderr)
        sys.exit(1)
    for name, path in paths.items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
