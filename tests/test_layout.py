"""The package's shape: the public API, an instant CLI, one declaration of options and keys."""

from __future__ import annotations

import subprocess
import sys

import pytest

import scpermut
from scpermut import options
from scpermut.errors import InputError
from scpermut.keys import Keys


def test_front_file_reexports_the_public_api():
    from scpermut.annotation import annotate
    from scpermut.data.preprocess import prepare_anndata
    from scpermut.metrics import evaluate

    assert scpermut.annotate is annotate
    assert scpermut.prepare_anndata is prepare_anndata
    assert scpermut.evaluate is evaluate
    assert scpermut.Keys is Keys
    assert isinstance(scpermut.__version__, str)


def test_cli_help_does_not_load_tensorflow_or_anndata():
    code = (
        "import sys; from click.testing import CliRunner; from scpermut.cli import main; "
        "[CliRunner().invoke(main, [*c, '--help']) for c in ([], ['run'], ['train'], ['predict'])]; "
        "print(sorted({'tensorflow', 'anndata'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_settings_defaults_come_from_the_option_declaration():
    from dataclasses import fields

    from scpermut.data.preprocess import PrepareSettings
    from scpermut.data.qc import QCThresholds
    from scpermut.model.settings import NetworkConfig, TrainingSettings

    for settings in (QCThresholds, PrepareSettings, NetworkConfig, TrainingSettings, Keys):
        for field in fields(settings):
            if field.name in options.ALL:
                assert field.default == options.default(field.name), (settings.__name__, field.name)


def test_keys_round_trip_through_a_record():
    keys = Keys(class_key="label", batch_key="donor", unlabeled_category="?")
    assert Keys.from_record({**keys.to_dict(), "target_sum": 1e4}) == keys
    assert Keys.from_record({}) == Keys()


def test_library_errors_name_arguments_and_the_cli_names_flags():
    from scpermut.model.settings import TrainingSettings

    with pytest.raises(InputError, match="`batch_size` must be at least 2") as error:
        TrainingSettings(batch_size=1)
    assert options.flag_text(str(error.value)).startswith("--batch_size must be at least 2")
    assert options.flag_text("pass `use_classifier=False`") == "pass --no-classifier"
    assert options.flag_text("`device=gpu`: no GPU") == "--device gpu: no GPU"
    assert options.flag_text("`not_an_option` stays") == "`not_an_option` stays"
