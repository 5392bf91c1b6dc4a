"""What a trained run was trained on: ``RUN/extraction.json`` as one typed object.

``clipae-train`` writes it from the manifest's lines of the training videos; ``clipae-eval --run``
and ``clipae-localize`` read it through :attr:`clipae.models.run.TrainedRun.extraction`, so the
features they make or read mean what the model learnt:

- ``grid``: the snippet grid (:class:`~clipae.core.grid.SnippetGrid`);
- ``streams``: per stream the model reads, its row width, stored dtype, the extractor's
  ``settings()`` (decode settings, crops, precision, ...) and the options it was given
  (``--clip-model``, ``--flow``, ...: what ``clipae-localize`` passes to the extractors again);
- ``weights``: ``{stream: "sha256:..." | "random" | "imported"}``;
- ``config_hash``: the manifest's hashes of those lines;
- ``manifest`` / ``annotations``: absolute paths of the training inputs (``None`` in run folders
  written before they were recorded: then ``clipae-eval --run`` needs ``--manifest``).

On disk the grid keys stay flat (``fps``, ``snippet_length``, ``snippet_stride``), as in a manifest line.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import BadInput
from ..core.grid import SnippetGrid

FILE = "extraction.json"


class RunError(BadInput, ValueError):
    """A run folder that cannot be used as asked (one line)."""


@dataclass(frozen=True)
class StreamRecord:
    """One stream of the training features."""

    dim: int
    dtype: str | None = None
    settings: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TrainedOn:
    grid: SnippetGrid
    streams: dict[str, StreamRecord]
    weights: dict[str, str] = field(default_factory=dict)
    config_hash: list[str] = field(default_factory=list)
    manifest: str | None = None
    annotations: str | None = None

    @property
    def random_streams(self) -> list[str]:
        """Streams whose features came from ``--random-weights`` networks."""
        return sorted(s for s, w in self.weights.items() if w == "random")

    def options(self) -> dict:
        """Every stream's extractor options in one dict (what ``ExtractorOptions.extra`` takes)."""
        out: dict = {}
        for record in self.streams.values():
            out.update(record.options)
        return out

    def to_json(self) -> dict:
        return {**self.grid.as_dict(), "config_hash": list(self.config_hash), "weights": dict(self.weights),
                "streams": {s: {"dim": r.dim, "dtype": r.dtype, "settings": r.settings, "options": r.options}
                            for s, r in self.streams.items()},
                "manifest": self.manifest, "annotations": self.annotations}

    @classmethod
    def from_json(cls, obj: dict, where: str = FILE) -> "TrainedOn":
        """From the json object; what older run folders lack gets its default, anything else
        missing or malformed is one :class:`RunError` line."""
        if not isinstance(obj, dict):
            raise RunError(f"{where}: not a JSON object")
        try:
            grid = SnippetGrid.from_record(obj)
        except KeyError as e:
            raise RunError(f"{where}: the run does not record its snippet grid ({e.args[0]})") from None
        except (TypeError, ValueError) as e:
            raise RunError(f"{where}: an invalid snippet grid ({e})") from None
        raw = obj.get("streams")
        if not isinstance(raw, dict) or not raw:
            raise RunError(f"{where}: the run does not record which feature streams its model reads")
        try:
            streams = {str(s): StreamRecord(int(r["dim"]), r.get("dtype"), dict(r.get("settings") or {}),
                                            dict(r.get("options") or {})) for s, r in raw.items()}
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise RunError(f"{where}: a malformed stream entry ({e})") from None
        hashes = obj.get("config_hash") or []
        return cls(grid, streams, {str(k): str(v) for k, v in (obj.get("weights") or {}).items()},
                   [hashes] if isinstance(hashes, str) else [str(h) for h in hashes],
                   obj.get("manifest") or None, obj.get("annotations") or None)

    @classmethod
    def load(cls, run_dir: str | os.PathLike) -> "TrainedOn":
        path = Path(run_dir) / FILE
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RunError(f"{run_dir}: no {FILE}; is this a clipae-train run folder?") from None
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise RunError(f"{path}: cannot be read ({e})") from None
        return cls.from_json(obj, str(path))
