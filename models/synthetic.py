"""Synthetic features shaped like THUMOS14, built on the paper's premises.

    python -m clipae.models.synthetic OUT [--train 200] [--test 213] [--classes 20] [--snippets 750] [--seed 0]

writes ``OUT/manifest.jsonl``, ``OUT/features/<stream>/<video>.npy`` and ``OUT/ground_truth.json``
(ActivityNet schema; subsets ``validation`` = train and ``test``, as THUMOS14). Every video shows one
class in several instances of varying length on a 25 fps, 16-frame snippet grid. Per snippet:

- **CBP** (``i3d_rgb``, ``i3d_flow``): background shares one look across all videos plus a video
  *scene* drawn from ``3 K`` scenes: with probability ``scene_corr`` the scene owned by the video's
  class (scene ``k`` for class ``k``: a swimming pool for diving), otherwise any scene. The scene is
  present on every snippet, actions included, with strength ``scene``. The class is visible only in a *core*
  part of each instance (25-45 % of it); the rest of the instance looks like background with a faint
  trace of the class. A few *distractor* segments of the background look like the core of another
  class: background that misleads.
- **VLP** (``clip``): the class is visible over the whole instance; background shows its common
  look and the scene.
- **Audio** (``vggish``): an action sound over the whole instance with onset / offset bursts at its
  boundaries, ambient noise elsewhere; a fraction of the videos has no audio track (zero rows,
  ``has_audio: false``).

Signal vectors are random unit directions of each stream; noise has the same total norm in any
dimension, so small dims (``--dims``) keep the same difficulty for fast tests.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..pipeline.manifest import MANIFEST_NAME, append_record, save_array_atomic

FPS, LENGTH = 25.0, 16
DEFAULT_DIMS = {"i3d_rgb": 1024, "i3d_flow": 1024, "clip": 512, "vggish": 128}


@dataclass
class SyntheticSpec:
    train: int = 200
    test: int = 213
    classes: int = 20
    snippets: int = 750                      # mean snippets per video (±30 %)
    instances: tuple[int, int] = (3, 7)      # instances per video
    instance_len: tuple[float, float] = (0.02, 0.08)   # instance length as a fraction of the video
    core: tuple[float, float] = (0.25, 0.45)            # CBP-discriminative part of an instance
    distractors: tuple[int, int] = (1, 3)    # misleading background segments per video
    no_audio: float = 0.1                    # fraction of videos without an audio track
    scene: float = 0.4                       # strength of the background scene (CBP and VLP)
    scene_corr: float = 0.0                  # probability that a video's scene is its class's own scene
    core_strength: float = 2.0               # CBP class signal in an instance's core
    vlp_strength: float = 1.5                # VLP class signal over an instance
    audio_strength: float = 1.0              # scales the action sound, the class sound and the onset bursts
    dims: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_DIMS))
    dtype: str = "float32"
    seed: int = 0


class _Directions:
    """Fixed random unit directions of every stream (the 'meaning' of each signal)."""

    def __init__(self, spec: SyntheticSpec, rng: np.random.Generator):
        k, scenes = spec.classes, 3 * spec.classes

        def unit(n, d):
            v = rng.standard_normal((n, d)).astype(np.float32)
            return v / np.linalg.norm(v, axis=1, keepdims=True)

        d = spec.dims
        self.core = {s: unit(k, d[s]) for s in ("i3d_rgb", "i3d_flow")}
        self.generic = {s: unit(1, d[s])[0] for s in ("i3d_rgb", "i3d_flow")}
        self.background = {s: unit(1, d[s])[0] for s in ("i3d_rgb", "i3d_flow", "clip")}
        self.scene = {s: unit(scenes, d[s]) for s in ("i3d_rgb", "i3d_flow", "clip")}
        self.vlp_class = unit(k, d["clip"])
        self.sound, self.onset = unit(2, d["vggish"])
        self.class_sound = unit(k, d["vggish"])
        self.num_scenes = scenes


def _noise(rng, t, d, scale):
    return rng.standard_normal((t, d)).astype(np.float32) * (scale / np.sqrt(d))


def _place_segments(rng, t, lengths, gap=3):
    """Non-overlapping ``[start, end)`` segments of the given lengths, in temporal order."""
    lengths = list(lengths)
    while lengths and t - sum(lengths) - gap * (len(lengths) + 1) < 0:
        lengths.pop()                                    # too many for a short video: drop the last
    free = t - sum(lengths) - gap * (len(lengths) + 1)
    cuts = np.sort(rng.integers(0, free + 1, size=len(lengths)))
    out, pos, prev = [], gap, 0
    for length, c in zip(lengths, cuts):
        pos += c - prev
        prev = c
        out.append((int(pos), int(pos + length)))
        pos += length + gap
    return out


def make_video(spec: SyntheticSpec, dirs: _Directions, label: int, rng: np.random.Generator):
    """Features ``{stream: (T, dim)}``, instances ``[(start, end)]`` in snippets, and ``has_audio``."""
    t = max(24, int(round(spec.snippets * rng.uniform(0.7, 1.3))))
    n_inst = int(rng.integers(spec.instances[0], spec.instances[1] + 1))
    n_dis = int(rng.integers(spec.distractors[0], spec.distractors[1] + 1))
    lengths = [max(4, int(round(t * rng.uniform(*spec.instance_len)))) for _ in range(n_inst)]
    dis_lengths = [max(2, int(round(t * spec.instance_len[0]))) for _ in range(n_dis)]
    order = rng.permutation(n_inst + n_dis)
    segs = _place_segments(rng, t, [(lengths + dis_lengths)[i] for i in order])
    instances = [segs[j] for j, i in enumerate(order[:len(segs)]) if i < n_inst]
    distractors = [segs[j] for j, i in enumerate(order[:len(segs)]) if i >= n_inst]
    scene = int(rng.integers(dirs.num_scenes))
    if spec.scene_corr > 0 and rng.random() < spec.scene_corr:
        scene = label                                    # the class's own scene
    d = spec.dims
    f = {}
    for s in ("i3d_rgb", "i3d_flow"):
        x = _noise(rng, t, d[s], 1.0) + dirs.background[s] + spec.scene * dirs.scene[s][scene]
        for a, b in instances:
            # outside its core an instance looks like background, with a faint trace of its class
            x[a:b] += -0.3 * dirs.background[s] + 0.3 * dirs.generic[s] + 0.15 * dirs.core[s][label]
            n = b - a
            c_len = max(1, int(round(n * rng.uniform(*spec.core))))
            c0 = a + int(rng.integers(0, n - c_len + 1))
            x[c0:c0 + c_len] += spec.core_strength * dirs.core[s][label] - 0.7 * dirs.background[s]
        for a, b in distractors:
            other = int((label + rng.integers(1, spec.classes)) % spec.classes) if spec.classes > 1 else label
            x[a:b] += spec.core_strength * dirs.core[s][other] - dirs.background[s]
        f[s] = x
    v = _noise(rng, t, d["clip"], 0.7) + dirs.background["clip"] + spec.scene * dirs.scene["clip"][scene]
    for a, b in instances:
        v[a:b] += spec.vlp_strength * dirs.vlp_class[label] - dirs.background["clip"]
    f["clip"] = v
    has_audio = bool(rng.random() >= spec.no_audio)
    au = np.zeros((t, d["vggish"]), np.float32)
    if has_audio:
        au += _noise(rng, t, d["vggish"], 0.5)
        for a, b in instances:
            g = spec.audio_strength
            au[a:b] += g * (1.5 * dirs.sound + 0.5 * dirs.class_sound[label])
            au[a:min(a + 2, b)] += g * dirs.onset
            au[max(b - 2, a):b] += g * dirs.onset
    f["vggish"] = au
    return f, instances, has_audio


class SyntheticTextTower:
    """A stand-in for CLIP's text tower on synthetic data: the embedding of a class name is that
    class's VLP direction (what its ``clip`` rows show), as CLIP's text of a class names what its
    images show. ``embed(names) -> (len(names), clip dim)`` unit rows."""

    weights_id = "random"

    def __init__(self, spec: SyntheticSpec):
        self.directions = _Directions(spec, np.random.default_rng(spec.seed)).vlp_class
        self.names = class_names(spec.classes)

    def embed(self, names: list[str]) -> np.ndarray:
        return np.stack([self.directions[self.names.index(n)] for n in names])


def class_names(k: int) -> list[str]:
    return [f"action_{i:02d}" for i in range(k)]


def generate(out: str | Path, spec: SyntheticSpec) -> dict[str, Path]:
    """Writes the dataset; returns ``{"manifest", "ground_truth", "root"}`` paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    dirs = _Directions(spec, rng)
    names = class_names(spec.classes)
    manifest = out / MANIFEST_NAME
    if manifest.exists():
        manifest.unlink()
    database = {}
    snippet_s = LENGTH / FPS
    for subset, n, prefix in (("validation", spec.train, "video_validation"), ("test", spec.test, "video_test")):
        for i in range(n):
            vid = f"{prefix}_{i + 1:07d}"
            label = i % spec.classes if i < spec.classes else int(rng.integers(spec.classes))
            feats, instances, has_audio = make_video(spec, dirs, label, rng)
            t = feats["i3d_rgb"].shape[0]
            streams = {}
            for s, a in feats.items():
                rel = Path("features") / s / f"{vid}.npy"
                save_array_atomic(out / rel, a.astype(spec.dtype))
                streams[s] = {"path": str(rel), "dim": int(a.shape[1]), "dtype": spec.dtype,
                              "settings": {"synthetic": True, "seed": spec.seed}}
            append_record(manifest, {
                "video_id": vid, "source": f"synthetic://{vid}", "status": "ok", "error": None,
                "duration_s": t * snippet_s, "native_fps": FPS, "num_frames": t * LENGTH,
                "fps": FPS, "snippet_length": LENGTH, "snippet_stride": LENGTH, "num_snippets": t,
                "has_audio": has_audio, "streams": streams, "config_hash": f"synthetic-{spec.seed}",
                "weights": {s: "random" for s in feats},
            })
            database[vid] = {"subset": subset, "duration": t * snippet_s, "annotations": [
                {"segment": [round(a * snippet_s, 3), round(b * snippet_s, 3)], "label": names[label]}
                for a, b in instances]}
    gt_path = out / "ground_truth.json"
    gt_path.write_text(json.dumps({"version": "synthetic", "taxonomy": [], "database": database}), encoding="utf-8")
    return {"manifest": manifest, "ground_truth": gt_path, "root": out}


def parse_dims(text: str) -> dict[str, int]:
    dims = dict(DEFAULT_DIMS)
    for part in filter(None, text.split(",")):
        name, _, value = part.partition("=")
        if name not in dims or not value.isdigit():
            raise argparse.ArgumentTypeError(f"--dims takes {','.join(f'{k}=N' for k in DEFAULT_DIMS)}, got {part!r}")
        dims[name] = int(value)
    return dims


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m clipae.models.synthetic", description=__doc__.split("\n\n")[0])
    p.add_argument("out")
    d = SyntheticSpec()
    p.add_argument("--train", type=int, default=d.train, help="training videos (subset 'validation')")
    p.add_argument("--test", type=int, default=d.test, help="test videos (subset 'test')")
    p.add_argument("--classes", type=int, default=d.classes)
    p.add_argument("--snippets", type=int, default=d.snippets, help="mean snippets per video")
    p.add_argument("--no-audio", type=float, default=d.no_audio, help="fraction of videos without audio")
    p.add_argument("--dims", type=parse_dims, default=dict(DEFAULT_DIMS), help="e.g. i3d_rgb=64,clip=32")
    p.add_argument("--dtype", choices=["float32", "float16"], default=d.dtype)
    p.add_argument("--seed", type=int, default=d.seed)
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    spec = SyntheticSpec(train=a.train, test=a.test, classes=a.classes, snippets=a.snippets, no_audio=a.no_audio,
                         dims=a.dims, dtype=a.dtype, seed=a.seed)
    paths = generate(a.out, spec)
    print(f"wrote {spec.train + spec.test} videos: {paths['manifest']} and {paths['ground_truth']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
