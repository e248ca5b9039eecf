"""Stage records of a run folder: what makes ``edgeseg run`` resumable and cached.

Each stage has a key: the sha256 of its own recipe sections (the convert/quantize/verify/report sections
with their defaults filled in; the train and bench options as written, so that a newer edgeseg with other
training defaults does not retrain a cached run unless asked: ``--redo train``), of the outputs of the
stages it reads (their ``outputs_sha``: e.g. the checkpoint's sha256 for the converters) and of any outside
input (the data's fingerprint). When the stage completes, ``stages/<stage>.json`` is written atomically with
the key, the outputs and the sha256 of every file it produced. A later run skips the stage when the record
is there, complete, has the same key and its files are still the ones it hashed; otherwise the stage runs
again and says why (which part of its key changed, or which file went missing).

A stage that starts removes its old record first and leaves ``stages/<stage>.started.json`` (with the key)
while it works, so an interrupted stage never has a completed record; the training stage reads that marker
to resume from its ``last.pt``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeseg.common.io import atomic_write_json, sha256_file

RECORD_FORMAT = 1


def digest(obj: Any) -> str:
    """sha256 of the canonical JSON of ``obj`` (sorted keys; tuples as lists)."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def data_fingerprint(data: str) -> dict[str, Any]:
    """What identifies a dataset cheaply: ``synthetic[:N]`` itself, or for a folder the sha256 of every file's
    relative path, size and modification time (a file added, removed or rewritten changes it; the folder
    may move)."""
    if data == "synthetic" or data.startswith("synthetic:"):
        return {"source": data, "sha256": digest(data)}
    root = Path(data)
    entries = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            p = Path(folder) / name
            st = p.stat()
            entries.append([p.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns])
    return {"source": str(root), "files": len(entries), "sha256": digest(entries)}


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class StageKey:
    """The parts of a stage's key, kept apart so that a rerun can say which one changed.

    Attributes:
        sections: the stage's recipe sections (each hashed on its own, so a rerun names the one that changed).
        upstream: ``{stage: outputs_sha}`` of the stages it reads.
        inputs: outside inputs (data fingerprint, an init checkpoint's sha256).
    """

    stage: str
    version: int
    sections: dict[str, Any]
    upstream: dict[str, str] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)

    def parts(self) -> dict[str, str]:
        return {"version": digest(self.version), **{f"section:{k}": digest(v) for k, v in self.sections.items()},
                **{f"upstream:{k}": v for k, v in self.upstream.items()},
                **{f"input:{k}": digest(v) for k, v in self.inputs.items()}}

    @property
    def key(self) -> str:
        return digest({"stage": self.stage, **self.parts()})


class RunFolder:
    """The run folder: ``stages/*.json`` records, and paths relative to the folder (so it can move)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.stages = self.root / "stages"

    def rel(self, path: str | Path) -> str:
        p = Path(path).resolve()
        try:
            return p.relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return str(p)

    def abs(self, rel: str) -> Path:
        p = Path(rel)
        return p if p.is_absolute() else self.root / p

    def record_path(self, stage: str) -> Path:
        return self.stages / f"{stage}.json"

    def marker_path(self, stage: str) -> Path:
        return self.stages / f"{stage}.started.json"

    def load(self, stage: str) -> dict[str, Any] | None:
        path = self.record_path(stage)
        try:
            rec = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return rec if isinstance(rec, dict) else None

    def marker(self, stage: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.marker_path(stage).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def why_stale(self, stage: str, key: StageKey) -> str | None:
        """None when the stage's completed record matches ``key`` and its files are intact; else why not."""
        rec = self.load(stage)
        if rec is None:
            return "interrupted before it completed" if self.marker(stage) else "no completed record"
        if rec.get("status") != "complete" or rec.get("format") != RECORD_FORMAT:
            return "its record is incomplete"
        if rec.get("key") != key.key:
            old = rec.get("parts") or {}
            changed = [k for k, v in key.parts().items() if old.get(k) != v]
            changed += [k for k in old if k not in key.parts()]
            names = []
            for k in changed:
                if k.startswith("section:"):
                    names.append(f"recipe section {k.split(':', 1)[1]!r} changed")
                elif k.startswith("upstream:"):
                    names.append(f"the {k.split(':', 1)[1]} stage's outputs changed")
                elif k.startswith("input:"):
                    names.append(f"{k.split(':', 1)[1]} changed")
                else:
                    names.append("the stage's code version changed")
            return "; ".join(names) or "its key changed"
        for rel, sha in (rec.get("files") or {}).items():
            path = self.abs(rel)
            if not path.is_file():
                return f"its output {rel} is missing"
            if sha256_file(path) != sha:
                return f"its output {rel} was modified"
        return None

    def start(self, stage: str, key: StageKey) -> None:
        """Forget the stage's completed record and leave the started marker (both before any work)."""
        self.stages.mkdir(parents=True, exist_ok=True)
        self.record_path(stage).unlink(missing_ok=True)
        atomic_write_json(self.marker_path(stage), {"stage": stage, "key": key.key, "started": now()})

    def complete(self, stage: str, key: StageKey, outputs: dict[str, Any], files: list[str | Path],
                 started: str, elapsed_s: float) -> dict[str, Any]:
        """Write the completed record atomically (files hashed now) and drop the marker; returns the record."""
        hashes = {self.rel(f): sha256_file(f) for f in files}
        rec = {"format": RECORD_FORMAT, "stage": stage, "status": "complete", "key": key.key,
               "parts": key.parts(), "started": started, "finished": now(), "elapsed_s": round(elapsed_s, 2),
               "outputs": outputs, "files": hashes,
               # what downstream keys hash: the files a stage made (its other outputs describe them)
               "outputs_sha": digest(hashes) if hashes else digest(outputs)}
        atomic_write_json(self.record_path(stage), rec)
        self.marker_path(stage).unlink(missing_ok=True)
        return rec
