"""Build the bundled demo corpus ``data/demo`` from the shared speech material.

Every utterance of ``<shared>/speech/<corpus>/<speaker>/<file>`` is resampled to
8 kHz mono and re-encoded as 16-bit FLAC into ``data/demo/<speaker>/<file>.flac``
(the ``folder`` corpus layout of ``prepare_data.py``). The attribution files are
copied beside the audio. Run once from the repository root::

    python data/make_demo.py --source ../shared/speech --target data/demo
"""

import argparse
import pathlib
import shutil

import soundfile as sf
import torch
import torchaudio

TARGET_RATE = 8000
AUDIO_SUFFIXES = {".wav", ".flac"}


def make_demo(source: pathlib.Path, target: pathlib.Path) -> int:
    """Resample every utterance under ``source`` into ``target``; returns the count."""
    count = 0
    for path in sorted(source.rglob("*")):
        if path.suffix.lower() not in AUDIO_SUFFIXES:
            continue
        signal, rate = sf.read(path, dtype="float32", always_2d=True)
        # mono is guaranteed by the source manifest; keep channel 0 defensively
        wave = torch.from_numpy(signal[:, 0])
        if rate != TARGET_RATE:
            wave = torchaudio.functional.resample(wave, rate, TARGET_RATE)
        out = target / path.parent.name / (path.stem + ".flac")
        out.parent.mkdir(parents=True, exist_ok=True)
        sf.write(out, wave.clamp(-1.0, 1.0).numpy(), TARGET_RATE, subtype="PCM_16")
        count += 1
    for name in ("LICENSE.TXT", "SPEAKERS.TXT"):
        shutil.copy(source / "librispeech" / name, target / name)
    return count


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=pathlib.Path, default="../shared/speech")
    parser.add_argument("--target", type=pathlib.Path, default="data/demo")
    args = parser.parse_args()
    print(f"wrote {make_demo(args.source, args.target)} files to {args.target}")
