"""The spaCy model behind redaction is the pinned en_core_web_sm 3.8.0, checked before use."""

import shutil
from pathlib import Path

import pytest

from bus.redaction import model


def test_installed_model_has_its_pinned_files_and_explosions_meta() -> None:
    assert model.verify() == model.model_dir()


def test_a_model_file_changed_after_install_is_refused(tmp_path: Path) -> None:
    copy = tmp_path / "model"
    shutil.copytree(model.model_dir(), copy)
    with (copy / "ner" / "moves").open("ab") as f:
        f.write(b"\0")
    with pytest.raises(model.ModelError, match="ner/moves"):
        model.verify(copy)


def test_the_loaded_pipeline_finds_people_as_the_model_does() -> None:
    nlp = model.load_ner()
    assert nlp.pipe_names == ["ner"]
    doc = nlp("Yesterday Sarah Johnson met Michael Brown in Manchester.")
    assert {(e.text, e.label_) for e in doc.ents} >= {("Sarah Johnson", "PERSON"), ("Michael Brown", "PERSON")}
