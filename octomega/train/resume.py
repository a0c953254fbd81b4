"""A run's identity (saved in every checkpoint) and the checks a resume makes against it."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

from octomega.config import SCHEMA_VERSION, ConfigError, RunConfig


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except Exception:
        return None


def _versions() -> dict:
    out = {}
    for pkg in ("octomega", "megatron-core", "torch", "transformer-engine", "datatrove", "transformers"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def identity(cfg: RunConfig, blend: dict | None) -> dict:
    from octomega.train.data import blend_fingerprint

    return {
        "schema_version": SCHEMA_VERSION,
        "git_commit": _git_commit(),
        "versions": _versions(),
        "blend_fingerprint": blend_fingerprint(blend),
        "blend_corpora": {c["name"]: blend_fingerprint({"corpora": [c]}) for c in (blend or {}).get("corpora", [])},
        "seq_length": cfg.train.seq_length,
        "global_batch_size": cfg.train.global_batch_size,
    }


def check_resume_compatible(meta: dict, cfg: RunConfig, blend_fp: str | None) -> None:
    """Refuse a resume whose data stream would silently change, unless checkpoint.allow_changes says so."""
    if meta.get("schema_version", SCHEMA_VERSION) > SCHEMA_VERSION:
        raise ConfigError(f"checkpoint schema {meta['schema_version']} is newer than this octomega's "
                         f"({SCHEMA_VERSION}): upgrade octomega")
    allowed = set(cfg.checkpoint.allow_changes)
    changes = []
    if meta.get("seq_length") not in (None, cfg.train.seq_length) and "seq_length" not in allowed:
        changes.append(f"train.seq_length {meta['seq_length']} -> {cfg.train.seq_length}")
    if meta.get("global_batch_size") not in (None, cfg.train.global_batch_size) and "global_batch_size" not in allowed:
        changes.append(f"train.global_batch_size {meta['global_batch_size']} -> {cfg.train.global_batch_size}")
    if meta.get("blend_fingerprint") != blend_fp and "blend" not in allowed:
        changes.append(f"data blend fingerprint {meta.get('blend_fingerprint')} -> {blend_fp}")
    if changes:
        raise ConfigError("refusing to resume: " + "; ".join(changes) + ". Either restore the original settings, "
                         "start a new run directory, or allow it with checkpoint.allow_changes=" +
                         ",".join(sorted({c.split()[0].split('.')[-1] if 'blend' not in c else 'blend' for c in changes})))
