"""Tiny corpus layouts built from the bundled demo speech, shared by the data tests."""

import pathlib

import numpy as np
import soundfile as sf
import torch
import torchaudio

DEMO = pathlib.Path(__file__).resolve().parents[1] / "data" / "demo"
# clean speakers (high dynamic range) with short utterances
SPEAKERS = ["367", "1688", "3331", "aew", "2033", "3005", "LJ"]
ALL_SPEAKERS = sorted(d.name for d in DEMO.iterdir() if d.is_dir())


def demo_speech(speaker: str, index: int = 0, seconds: float = None, sample_rate: int = 8000) -> np.ndarray:
    """One demo utterance as float32, optionally truncated and resampled."""
    path = sorted((DEMO / speaker).glob("*.flac"))[index]
    x, sr = sf.read(path, dtype="float32")
    if seconds is not None:
        x = x[: int(seconds * sr)]
    if sample_rate != sr:
        x = torchaudio.functional.resample(torch.from_numpy(x), sr, sample_rate).numpy()
    return x


def make_folder_corpus(root: pathlib.Path, speakers=SPEAKERS, per_speaker: int = 1) -> pathlib.Path:
    """``<root>/<speaker>/<file>.flac`` with the first utterances of each speaker."""
    for spk in speakers:
        for _i, path in enumerate(sorted((DEMO / spk).glob("*.flac"))[:per_speaker]):
            (root / spk).mkdir(parents=True, exist_ok=True)
            (root / spk / path.name).write_bytes(path.read_bytes())
    return root


def _wsj_name(i: int, spk1: str, spk2: str) -> str:
    return f"{spk1[:3]:0>3}a010{i}_1.2_{spk2[:3]:0>3}c020{i}_-1.2"


def make_wsj0_2mix(
    root: pathlib.Path, sample_rate: int = 8000, file_rate: int = None, pairs: int = 2, seconds: float = 1.5
) -> pathlib.Path:
    """``<root>/2speakers/wav8k/min/{tr,cv,tt}/{mix,s1,s2}`` with short demo pairs."""
    file_rate = file_rate or sample_rate
    base = root / "2speakers" / f"wav{sample_rate // 1000}k" / "min"
    for k, split in enumerate(("tr", "cv", "tt")):
        for i in range(pairs):
            spk1, spk2 = SPEAKERS[(k + i) % 7], SPEAKERS[(k + i + 3) % 7]
            s1 = demo_speech(spk1, 0, seconds, file_rate)
            s2 = 0.7 * demo_speech(spk2, 0, seconds, file_rate)
            n = min(len(s1), len(s2))  # "min" version: truncated to the shorter one
            name = _wsj_name(i, spk1, spk2) + ".wav"
            for sub, sig in (("s1", s1[:n]), ("s2", s2[:n]), ("mix", s1[:n] + s2[:n])):
                (base / split / sub).mkdir(parents=True, exist_ok=True)
                sf.write(base / split / sub / name, sig, file_rate)
    return root


def make_wham_noise(root: pathlib.Path, wsj_root: pathlib.Path, sample_rate: int = 8000) -> pathlib.Path:
    """Binaural 16 kHz ``wham_noise/{tr,cv,tt}`` files named like the mixtures."""
    rng = np.random.default_rng(0)
    base = wsj_root / "2speakers" / f"wav{sample_rate // 1000}k" / "min"
    for split in ("tr", "cv", "tt"):
        (root / split).mkdir(parents=True, exist_ok=True)
        for mix in (base / split / "mix").glob("*.wav"):
            noise = 0.05 * rng.standard_normal((int(2.5 * 16000), 2)).astype(np.float32)
            sf.write(root / split / mix.name, noise, 16000)
    return root


def make_wham_mixtures(
    root: pathlib.Path, wsj_root: pathlib.Path, sample_rate: int = 8000, file_rate: int = None
) -> pathlib.Path:
    """The released WHAM! test set ``<root>/wav8k/min/tt/{mix_both,mix_clean,mix_single,s1,s2,noise}``.

    Like the WHAM! scripts, the sources are rescaled copies of the WSJ0-2mix ones
    (so they differ from them) and the noise is mono, at the mixture's rate, and
    covers the whole mixture.
    """
    file_rate = file_rate or sample_rate
    rng = np.random.default_rng(2)
    rate = f"wav{sample_rate // 1000}k"
    source = wsj_root / "2speakers" / rate / "min" / "tt"
    base = root / rate / "min" / "tt"
    for s1_path in sorted((source / "s1").glob("*.wav")):
        s1 = 0.8 * sf.read(s1_path, dtype="float32")[0]
        s2 = 0.8 * sf.read(source / "s2" / s1_path.name, dtype="float32")[0]
        noise = (0.05 * rng.standard_normal(len(s1))).astype(np.float32)
        for sub, sig in (
            ("s1", s1),
            ("s2", s2),
            ("noise", noise),
            ("mix_clean", s1 + s2),
            ("mix_single", s1 + noise),
            ("mix_both", s1 + s2 + noise),
        ):
            (base / sub).mkdir(parents=True, exist_ok=True)
            sf.write(base / sub / s1_path.name, sig, file_rate)
    return root


def make_libri2mix(root: pathlib.Path, sample_rate: int = 8000, pairs: int = 2, seconds: float = 1.5) -> pathlib.Path:
    """``<root>/Libri2Mix/wav8k/min/{train-100,dev,test}/{mix_clean,mix_both,s1,s2,noise}``."""
    rng = np.random.default_rng(1)
    base = root / "Libri2Mix" / f"wav{sample_rate // 1000}k" / "min"
    for k, split in enumerate(("train-100", "dev", "test")):
        for i in range(pairs):
            spk1, spk2 = SPEAKERS[(k + i) % 7], SPEAKERS[(k + i + 2) % 7]
            s1 = demo_speech(spk1, 0, seconds, sample_rate)
            s2 = demo_speech(spk2, 0, seconds, sample_rate)
            n = min(len(s1), len(s2))
            noise = 0.02 * rng.standard_normal(n).astype(np.float32)
            name = f"{spk1}-1{i}-000{i}_{spk2}-2{i}-000{i}.wav"
            for sub, sig in (
                ("s1", s1[:n]),
                ("s2", s2[:n]),
                ("noise", noise),
                ("mix_clean", s1[:n] + s2[:n]),
                ("mix_both", s1[:n] + s2[:n] + noise),
            ):
                (base / split / sub).mkdir(parents=True, exist_ok=True)
                sf.write(base / split / sub / name, sig, sample_rate)
    return root


def make_wsj0_3mix(
    root: pathlib.Path, sample_rate: int = 8000, mixtures: int = 2, seconds: float = 1.5
) -> pathlib.Path:
    """``<root>/3speakers/wav8k/min/{tr,cv,tt}/{mix,s1,s2,s3}`` with short demo triplets."""
    base = root / "3speakers" / f"wav{sample_rate // 1000}k" / "min"
    for k, split in enumerate(("tr", "cv", "tt")):
        for i in range(mixtures):
            spks = [SPEAKERS[(k + i + 2 * j) % 7] for j in range(3)]
            sources = [0.8**j * demo_speech(spk, 0, seconds, sample_rate) for j, spk in enumerate(spks)]
            n = min(len(s) for s in sources)  # "min" version: truncated to the shortest
            # 011a010d_0.5_20do010c_-0.5_22ga010m_0: utterance, level, three times
            name = "_".join(f"{spk[:3]:0>3}a01{j}{i}_{0.5 - 0.5 * j:g}" for j, spk in enumerate(spks)) + ".wav"
            signals = {f"s{j + 1}": s[:n] for j, s in enumerate(sources)}
            signals["mix"] = sum(s[:n] for s in sources)
            for sub, sig in signals.items():
                (base / split / sub).mkdir(parents=True, exist_ok=True)
                sf.write(base / split / sub / name, sig, sample_rate)
    return root


def make_libri3mix(
    root: pathlib.Path, sample_rate: int = 8000, mixtures: int = 2, seconds: float = 1.5
) -> pathlib.Path:
    """``<root>/Libri3Mix/wav8k/min/{train-100,dev,test}/{mix_clean,mix_both,s1,s2,s3,noise}``."""
    rng = np.random.default_rng(3)
    base = root / "Libri3Mix" / f"wav{sample_rate // 1000}k" / "min"
    for k, split in enumerate(("train-100", "dev", "test")):
        for i in range(mixtures):
            spks = [SPEAKERS[(k + i + 2 * j) % 7] for j in range(3)]
            sources = [demo_speech(spk, 0, seconds, sample_rate) for spk in spks]
            n = min(len(s) for s in sources)
            noise = 0.02 * rng.standard_normal(n).astype(np.float32)
            name = "_".join(f"{spk}-{j}{i}-000{i}" for j, spk in enumerate(spks)) + ".wav"
            signals = {f"s{j + 1}": s[:n] for j, s in enumerate(sources)}
            signals.update(noise=noise, mix_clean=sum(s[:n] for s in sources))
            signals["mix_both"] = signals["mix_clean"] + noise
            for sub, sig in signals.items():
                (base / split / sub).mkdir(parents=True, exist_ok=True)
                sf.write(base / split / sub / name, sig, sample_rate)
    return root


def make_noise_folder(
    root: pathlib.Path, files: int = 6, seconds: float = 3.0, sample_rate: int = 16000
) -> pathlib.Path:
    """Synthetic background noise (coloured noise with a hum), ``<root>/noise<k>.wav``.

    The bundled demo corpus holds speech only; these files stand in for a noise
    corpus (e.g. WHAM! noise) in the speech-enhancement tests.
    """
    rng = np.random.default_rng(5)
    root.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    for k in range(files):
        white = rng.standard_normal(len(t))
        coloured = np.convolve(white, np.ones(4 + 4 * k) / (4 + 4 * k), mode="same")  # low-passed
        hum = 0.3 * np.sin(2 * np.pi * (50 + 10 * k) * t)
        noise = 0.1 * (coloured / np.std(coloured) + hum)
        sf.write(root / f"noise{k}.wav", noise.astype(np.float32), sample_rate)
    return root
