"""The option declaration checks values the same way for the CLI, a --params file and the API."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from scpermut import options
from scpermut.cli import main
from scpermut.errors import InputError


def test_a_params_file_names_every_unknown_key_and_bad_value_with_a_suggestion(tmp_path):
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"latent_dim": 3.5, "epochs_full": "many", "dropuot": 0.2, "dann": False, "hidden_layers": "256,x"}))
    with pytest.raises(InputError) as error:
        options.read_params_file(params, options.TRAINING | {"seed": options.SEED})
    message = str(error.value)
    assert message.startswith(
        f"{params}: not an option of this command: 'dropuot' (did you mean 'dropout'?), 'dann' (retired: `dann_weight` > 0 builds the batch head, 0 none);"
    )
    assert "`latent_dim` must be a whole number, not 3.5" in message
    assert "`epochs_full` must be a whole number, not 'many'" in message
    assert "`hidden_layers` must be positive integers" in message


def test_a_params_file_of_good_values_reads_back_by_python_name(tmp_path):
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"classifier": False, "hidden_layers": "64,32", "dropout": 0}))
    assert options.read_params_file(params, options.TRAINING) == {"use_classifier": False, "hidden_layers": (64, 32), "dropout": 0}


def _settings(name: str):
    from scpermut.data.qc import QCThresholds
    from scpermut.keys import Keys
    from scpermut.model.settings import NetworkConfig, TrainingSettings

    return {"QCThresholds": QCThresholds, "Keys": Keys, "NetworkConfig": NetworkConfig, "TrainingSettings": TrainingSettings}[name]


@pytest.mark.parametrize(
    ("settings", "values", "message"),
    [
        ("NetworkConfig", {"n_genes": 5, "n_classes": 2, "n_batches": 1, "dropout": 1.0}, "`dropout` must be below 1, not 1.0"),
        ("TrainingSettings", {"batch_size": 1}, "`batch_size` must be at least 2, not 1"),
        ("QCThresholds", {"max_pct_mito": 150.0}, "`max_pct_mito` must be at most 100, not 150.0"),
        ("Keys", {"class_key": 3}, "`class_key` must be text"),
    ],
)
def test_the_settings_reject_values_outside_the_declaration(settings, values, message):
    with pytest.raises(InputError, match=message):
        _settings(settings)(**values)


def test_the_settings_name_every_bad_value_at_once():
    from scpermut.model.settings import TrainingSettings

    with pytest.raises(InputError) as error:
        TrainingSettings(learning_rate=0.0, batch_size=1, early_stopping_metric="f1")
    assert str(error.value).count("must") == 3


@pytest.mark.parametrize(
    ("flag", "value"), [("--dropout", "1.5"), ("--batch_size", "0"), ("--hidden_layers", "64,x"), ("--latent_dim", "3.5")]
)
def test_the_cli_refuses_a_bad_value_before_any_work(tmp_path, flag, value):
    result = CliRunner().invoke(main, ["train", str(tmp_path / "missing.h5ad"), "--out", str(tmp_path / "m"), flag, value])
    assert result.exit_code == 2
    assert f"Invalid value for '{flag}'" in result.output
    assert "file not found" not in result.output
