"""`mmbench list`: one line per component; encoders with the modality kinds they read, tasks with their
modalities."""

from typer.testing import CliRunner

from mmbench import registry as registry_lib
from mmbench.api import Encoder, hookimpl
from mmbench.cli import app


def _rows(kind: str) -> dict[str, str]:
    result = CliRunner().invoke(app, ["list", kind])
    assert result.exit_code == 0, result.output
    return {line.split()[0]: line for line in result.output.splitlines()}


def test_encoders_show_the_kinds_they_accept(monkeypatch):
    class Anything(Encoder):
        """Reads whatever it is given."""

        name = "anything"

    class Plugin:
        @hookimpl
        def mmbench_encoders(self):
            return [Anything]

    extended = registry_lib.load(extra_plugins=[Plugin()])
    monkeypatch.setattr(registry_lib, "default", lambda: extended)
    rows = _rows("encoders")
    assert set(rows) == set(extended.names("encoders"))
    assert rows["mlp"].split()[1] == "vector" and "Linear+ReLU" in rows["mlp"]
    assert " frames, spectrogram " in rows["resnet18"] and "torchvision ResNet-18" in rows["resnet18"]
    assert " any kind " in rows["anything"] and rows["anything"].endswith("  Reads whatever it is given.")
    # the descriptions start in one column
    starts = {line.index(extended.get("encoders", name).cls.__doc__.split()[0]) for name, line in rows.items()}
    assert len(starts) == 1


def test_tasks_show_their_modalities_and_kinds():
    rows = _rows("tasks")
    assert "fast (vector), slow (vector)" in rows["synthetic"]
    assert "audio (spectrogram), visual (frames)" in rows["cremad"] and "CREMA-D (6 emotions)" in rows["cremad"]


def test_other_kinds_keep_name_and_description():
    assert _rows("balancers")["joint"].split(None, 1)[1] == \
        registry_lib.default().get("balancers", "joint").cls.__doc__.strip().splitlines()[0]
