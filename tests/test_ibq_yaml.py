"""An IBQ config.yaml is data: yaml tags that would build Python objects, or bad syntax, are a ValueError."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from vqswitch.adapters import load_pretrained

TINY = Path(__file__).parent / "fixtures" / "upstream" / "ibq_tiny"


@pytest.mark.parametrize("text", [
    "model: !!python/object/apply:os.system ['echo hi']\n",
    "model: !!python/name:os.system\n",
    "model: [unclosed\n",
])
def test_a_config_yaml_with_python_tags_or_bad_syntax_is_a_value_error(tmp_path, text):
    pytest.importorskip("yaml")
    folder = tmp_path / "ibq"
    shutil.copytree(TINY, folder)
    (folder / "config.yaml").write_text(text)
    with pytest.raises(ValueError, match="config.yaml"):
        load_pretrained(folder, adapter="ibq")
