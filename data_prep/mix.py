"""Blend prepared corpora for one training stage: Megatron weights, epochs implied, a blend file for octomega train.

    python -m data_prep.mix --stats data/ --mixture decay_short --train-tokens 20B --out blends/decay_short.json

Each corpus is a stats JSON written by data_prep.tokenize. Its role (web, qa_short, qa_long, dclm, code, ...)
comes from --corpus ROLE=STATS, else the stats' "role", else its name when the name is a role or a registry
corpus. A mixture (data_prep.registry.MIXTURES) gives each role a share of --train-tokens; corpora sharing a
role split that share by their token counts. --mixture custom --weights name=0.7,name=0.3 weights corpora (or
roles) directly. Megatron blends by sample and every sample has seq_length tokens, so weights are token shares.
epochs = weight * train_tokens / corpus tokens: a warning above --max-epochs, an error for an empty corpus.

The blend file (format octomega-blend/1) lists each corpus (name, role, prefix, weight, tokens, documents,
epochs), the held-out prefixes ("valid"), and the equivalent Megatron --data-path string. load_blend() checks one.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path

from data_prep.megatron_io import PrefixError, read_index
from data_prep.registry import CORPORA, MIXTURES, ROLES, roles_of, tokenize_command

BLEND_FORMAT = "octomega-blend/1"
_SUFFIX = {"k": 1e3, "K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12}


class BlendError(ValueError):
    """A blend that cannot be built or a blend file that does not check out; the message names file and field."""


def parse_tokens(text: str) -> int:
    """'20B', '1.5M', '200e9', '1_000_000' -> int."""
    s = str(text).replace("_", "").replace(",", "").strip()
    mult = _SUFFIX.get(s[-1:], 1)
    try:
        value = float(s[:-1] if s[-1:] in _SUFFIX else s) * mult
    except ValueError:
        raise BlendError(f"--train-tokens {text!r}: give a number like 20B, 1.5M or 200e9") from None
    if value <= 0:
        raise BlendError(f"--train-tokens must be > 0 (got {text})")
    return int(round(value))


def _weight_error(key: str, value) -> BlendError:
    return BlendError(f"--weights {key}={value}: a weight must be a finite number >= 0 (0 leaves the corpus out); "
                      "fix it and rerun")


def check_weights(weights: dict[str, float]) -> dict[str, float]:
    """Refuse negative, non-finite and all-zero custom weights (normalising them would drop or skew corpora)."""
    for key, w in weights.items():
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise _weight_error(key, w)
    if weights and not any(w > 0 for w in weights.values()):
        given = ", ".join(f"{k}={v:g}" for k, v in weights.items())
        raise BlendError(f"--weights {given}: all weights are zero; give at least one corpus a weight > 0")
    return weights


def parse_weights(text: str) -> dict[str, float]:
    """'web=0.7,qa_short=0.3' -> {"web": 0.7, "qa_short": 0.3}; a bad item is a BlendError naming it."""
    weights: dict[str, float] = {}
    for item in (x for x in re.split(r"[,\s]+", text) if x):
        key, eq, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not key or not value:
            raise BlendError(f"--weights {item!r}: write NAME=WEIGHT, e.g. web=0.7,qa_short=0.3")
        if key in weights:
            raise BlendError(f"--weights {key}: given twice ({key}={weights[key]:g} and {item}); give it once")
        try:
            w = float(value)
        except ValueError:
            raise BlendError(f"--weights {key}={value}: {value!r} is not a number; write NAME=WEIGHT, "
                             "e.g. web=0.7,qa_short=0.3") from None
        if not math.isfinite(w) or w < 0:
            raise _weight_error(key, value)
        weights[key] = w
    return check_weights(weights)


def load_stats(path) -> dict:
    path = Path(path)
    try:
        stats = json.loads(path.read_text())
    except FileNotFoundError:
        raise BlendError(f"{path}: no such stats file (data_prep.tokenize writes OUT/NAME.stats.json)") from None
    except ValueError as e:
        raise BlendError(f"{path}: not valid JSON ({e})") from None
    for key in ("name", "prefixes", "tokens", "documents", "dtype", "tokenizer_fingerprint"):
        if key not in stats:
            raise BlendError(f"{path}: field {key!r} missing; is this a data_prep.tokenize stats file?")
    stats["_path"] = str(path.resolve())
    return stats


def _assign_roles(stats: list[dict], explicit: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """role -> corpora. A corpus fills every role it has (megamath-qa: qa in the stable stage, qa_short later)."""
    roles = {r: list(v) for r, v in explicit.items()}
    for s in stats:
        mine = s.get("roles") or ([s["role"]] if s.get("role") else roles_of(s["name"]))
        if not mine:
            raise BlendError(f"{s['_path']}: cannot tell the role of corpus {s['name']!r}; pass --corpus ROLE="
                             f"{s['_path']} (roles: {', '.join(ROLES)}) or tokenize it with --role")
        for role in mine:
            roles.setdefault(role, []).append(s)
    return roles


def _members(key: str, roles: dict[str, list[dict]]) -> list[tuple[dict, str]]:
    """(stats, role) of the corpora a mixture key takes: a role's corpora, or the corpus of that name (a registry
    corpus named apart from the others of its role, as the ablation mixtures do)."""
    if key in roles:
        return [(s, key) for s in roles[key]]
    found: dict[str, tuple[dict, str]] = {}
    for role, ss in roles.items():
        for s in ss:
            if s["name"] == key:
                found.setdefault(s["_path"], (s, role))
    return list(found.values())


def _shares(mixture: str, roles: dict[str, list[dict]], weights: dict[str, float] | None, drop_missing: bool,
            warn) -> list[tuple[dict, str, float]]:
    """(stats, role, weight) for every corpus used; weights sum to 1."""
    if mixture == "custom":
        if not weights:
            raise BlendError("--mixture custom needs --weights name=0.7,name=0.3 (corpus names or roles)")
        check_weights(weights)
        by_name = {s["name"]: (s, r) for r, ss in roles.items() for s in ss}
        out = []
        for key, w in weights.items():
            if key in by_name:
                out.append((by_name[key][0], by_name[key][1], w))
            elif key in roles:
                total = sum(s["tokens"] for s in roles[key]) or 1
                out += [(s, key, w * s["tokens"] / total) for s in roles[key]]
            else:
                raise BlendError(f"--weights: {key!r} is neither a corpus ({', '.join(by_name)}) nor a role in use")
    else:
        if mixture not in MIXTURES:
            raise BlendError(f"--mixture {mixture!r}: choose one of {', '.join(MIXTURES)} or custom")
        share = dict(MIXTURES[mixture])
        members = {key: _members(key, roles) for key in share}
        missing = [r for r, p in share.items() if p > 0 and not members[r]]
        if missing and not drop_missing:
            have = {r: [s["name"] for s in ss] for r, ss in roles.items()}
            raise BlendError(f"mixture {mixture} needs roles {missing} that no corpus fills (have {have}); pass "
                             "--corpus ROLE=STATS, or --drop-missing-roles to share their tokens among the others")
        for r in missing:
            warn(f"mixture {mixture}: role {r} ({share.pop(r):.0%}) has no corpus; the other roles grow to fill it")
        out = []
        for key, p in share.items():
            total = sum(s["tokens"] for s, _ in members[key]) or 1
            out += [(s, role, p * s["tokens"] / total) for s, role in members[key]]
        used = {s["_path"] for s, _, _ in out}
        for r, ss in roles.items():
            unused = [s["name"] for s in ss if s["_path"] not in used]
            if r not in share and unused:
                warn(f"mixture {mixture} does not use role {r}: {', '.join(unused)} left out")
    merged: dict[str, list] = {}  # a corpus in two used roles appears once, with both shares
    for s, r, w in out:
        if s["_path"] in merged:
            merged[s["_path"]][1] += f"+{r}"
            merged[s["_path"]][2] += w
        else:
            merged[s["_path"]] = [s, r, w]
    norm = sum(w for _, _, w in merged.values())
    if norm <= 0:
        raise BlendError("all weights are zero")
    return [(s, r, w / norm) for s, r, w in merged.values() if w > 0]


def compute_blend(stats: list[dict], mixture: str, train_tokens: int, corpus_roles: dict[str, list[dict]] | None = None,
                  weights: dict[str, float] | None = None, max_epochs: float = 4.0, drop_missing: bool = False,
                  warn=None) -> dict:
    """The blend dict (see module docstring) for corpora `stats` (+ `corpus_roles`) under `mixture`."""
    warnings: list[str] = []

    def _warn(msg):
        warnings.append(msg)
        (warn or (lambda m: print(f"mix: warning: {m}", file=sys.stderr)))(msg)

    for s in stats + [s for ss in (corpus_roles or {}).values() for s in ss]:
        if s["tokens"] <= 0 or s["documents"] <= 0:
            raise BlendError(f"{s['_path']}: corpus {s['name']!r} is empty (0 tokens); fix its input or leave it out")
    used = _shares(mixture, _assign_roles(stats, corpus_roles or {}), weights, drop_missing, _warn)
    first = used[0][0]
    for s, _, _ in used:
        if s["tokenizer_fingerprint"] != first["tokenizer_fingerprint"]:
            raise BlendError(f"{s['_path']} was tokenized with tokenizer {s['tokenizer_fingerprint']} "
                             f"({s.get('tokenizer')}), {first['_path']} with {first['tokenizer_fingerprint']} "
                             f"({first.get('tokenizer')}): corpora in one blend must share a tokenizer; "
                             "re-tokenize one")
        if s["dtype"] != first["dtype"]:
            raise BlendError(f"{s['_path']} holds {s['dtype']} tokens but {first['_path']} {first['dtype']}")
    corpora, valid = [], []
    for s, role, w in used:
        parts = s["prefixes"]
        for i, part in enumerate(parts):
            pw = w * part["tokens"] / s["tokens"]
            epochs = w * train_tokens / s["tokens"]
            corpora.append({"name": s["name"] if len(parts) == 1 else f"{s['name']}:{i:05d}", "role": role,
                            "prefix": part["prefix"], "weight": pw, "tokens": part["tokens"],
                            "documents": part["documents"], "epochs": round(epochs, 4), "stats": s["_path"]})
        if w * train_tokens / s["tokens"] > max_epochs:
            _warn(f"{s['name']}: {w:.1%} of {train_tokens:,} tokens is {w * train_tokens / s['tokens']:.2f} epochs "
                  f"of its {s['tokens']:,} tokens (over --max-epochs {max_epochs}); it will repeat")
        if s.get("valid_prefix") and Path(s["valid_prefix"] + ".bin").exists():
            valid.append({"name": s["name"], "prefix": s["valid_prefix"]})
    return {
        "format": BLEND_FORMAT, "stage": mixture, "train_tokens": int(train_tokens), "dtype": first["dtype"],
        "tokenizer_fingerprint": first["tokenizer_fingerprint"], "tokenizer": first.get("tokenizer"),
        "vocab_size": first.get("vocab_size"), "corpora": corpora, "valid": valid,
        "data_path": " ".join(f"{c['weight']:.12g} {c['prefix']}" for c in corpora),
        "roles": {r: round(sum(c["weight"] for c in corpora if c["role"] == r), 12) for r in dict.fromkeys(
            c["role"] for c in corpora)},
        "warnings": warnings, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def load_blend(path) -> dict:
    """Read and check a blend file: format, weights sum to 1 (1e-6), every .bin/.idx present with the blend's
    dtype, one tokenizer fingerprint (also in each corpus's stats file when it is still there)."""
    path = Path(path)
    try:
        blend = json.loads(path.read_text())
    except FileNotFoundError:
        raise BlendError(f"{path}: no such blend file (python -m data_prep.mix writes one)") from None
    except ValueError as e:
        raise BlendError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(blend, dict) or blend.get("format") != BLEND_FORMAT:
        raise BlendError(f"{path}: field 'format' must be {BLEND_FORMAT!r} (got {blend.get('format')!r})")
    fp = blend.get("tokenizer_fingerprint")
    if not isinstance(fp, str) or not fp:
        raise BlendError(f"{path}: field 'tokenizer_fingerprint' missing")
    corpora = blend.get("corpora")
    if not isinstance(corpora, list) or not corpora:
        raise BlendError(f"{path}: field 'corpora' must be a non-empty list")
    total = 0.0
    for i, c in enumerate(corpora):
        where = f"{path}: corpora[{i}]"
        w = c.get("weight") if isinstance(c, dict) else None
        if not isinstance(w, (int, float)) or w < 0 or not math.isfinite(w):
            raise BlendError(f"{where}.weight must be a number >= 0 (got {w!r})")
        total += w
    if abs(total - 1.0) > 1e-6:
        raise BlendError(f"{path}: corpora weights sum to {total:.9f}, not 1 (within 1e-6)")
    for field, items in (("corpora", corpora), ("valid", blend.get("valid") or [])):
        for i, c in enumerate(items):
            try:
                ix = read_index(c["prefix"])
            except (PrefixError, KeyError, TypeError) as e:
                raise BlendError(f"{path}: {field}[{i}].prefix: {e}") from None
            if ix.dtype.name != blend.get("dtype"):
                raise BlendError(f"{path}: {field}[{i}].prefix {c['prefix']} holds {ix.dtype.name} tokens, the "
                                 f"blend says dtype {blend.get('dtype')!r}")
            stats_path = c.get("stats")
            if stats_path and Path(stats_path).is_file():
                other = json.loads(Path(stats_path).read_text()).get("tokenizer_fingerprint")
                if other != fp:
                    raise BlendError(f"{path}: {field}[{i}] ({stats_path}) was tokenized with {other}, the blend "
                                     f"says {fp}: corpora tokenized with different tokenizers cannot be mixed")
    return blend


def _stats_files(paths) -> list[str]:
    out = []
    for p in paths or []:
        p = Path(p)
        out += sorted(str(f) for f in p.glob("*.stats.json")) if p.is_dir() else [str(p)]
    return out


def _print_registry() -> None:
    print("Corpora (name: roles, source, note; tokenize command):")
    for c in CORPORA.values():
        print(f"  {c.name}: {', '.join(c.roles)}; {c.source}{'/' + c.data_dir if c.data_dir else ''}; {c.note}\n"
              f"      {tokenize_command(c)}")
    print("Mixtures (role: share of the stage's tokens):")
    for name, m in MIXTURES.items():
        print(f"  {name}: " + ", ".join(f"{r} {p:.0%}" for r, p in m.items()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m data_prep.mix", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stats", nargs="*", help="stats JSON files of prepared corpora, or directories holding them")
    ap.add_argument("--corpus", action="append", default=[], metavar="ROLE=STATS",
                    help="say which prepared corpus fills a role, e.g. qa_long=data/openr1.stats.json (repeatable)")
    ap.add_argument("--mixture", help=f"one of {', '.join(MIXTURES)}, or custom (with --weights)")
    ap.add_argument("--weights", help="custom weights, name=0.7,name=0.3 (corpus names or roles; normalised)")
    ap.add_argument("--train-tokens", help="the stage's token budget: 20B, 1.5M, 200e9 ...")
    ap.add_argument("--out", help="blend JSON to write")
    ap.add_argument("--max-epochs", type=float, default=4.0, help="warn when a corpus would repeat more (default 4)")
    ap.add_argument("--drop-missing-roles", action="store_true",
                    help="roles of the mixture with no corpus give their share to the others (default: error)")
    ap.add_argument("--list-corpora", action="store_true", help="print the corpus registry and mixtures, then exit")
    ap.add_argument("--dry-run", action="store_true", help="print the blend, write nothing")
    args = ap.parse_args(argv)
    if args.list_corpora:
        _print_registry()
        return 0
    try:
        if not args.mixture or not args.train_tokens or not (args.out or args.dry_run):
            raise BlendError("--mixture, --train-tokens and --out (or --dry-run) are required")
        explicit: dict[str, list[dict]] = {}
        for item in args.corpus:
            role, _, path = item.partition("=")
            if not path:
                raise BlendError(f"--corpus {item!r}: write ROLE=STATS_FILE")
            explicit.setdefault(role, []).append(load_stats(path))
        named = {s["_path"] for ss in explicit.values() for s in ss}
        stats = [s for s in map(load_stats, _stats_files(args.stats)) if s["_path"] not in named]
        weights = None
        if args.weights:
            if args.mixture != "custom":
                raise BlendError(f"--weights applies to --mixture custom only (got --mixture {args.mixture}); drop "
                                 "--weights or use --mixture custom")
            weights = parse_weights(args.weights)
        blend = compute_blend(stats, args.mixture, parse_tokens(args.train_tokens), explicit, weights,
                              args.max_epochs, args.drop_missing_roles)
    except (BlendError, ValueError) as e:
        print(f"mix: error: {e}", file=sys.stderr)
        return 2
    print(f"{'corpus':24} {'role':10} {'weight':>8} {'tokens':>14} {'drawn':>14} {'epochs':>7}")
    for c in blend["corpora"]:
        print(f"{c['name']:24} {c['role']:10} {c['weight']:8.4f} {c['tokens']:14,} "
              f"{round(c['weight'] * blend['train_tokens']):14,} {c['epochs']:7.2f}")
    print(f"--data-path {blend['data_path']}")
    if not args.dry_run:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(blend, indent=2) + "\n")
        print(f"mix: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
