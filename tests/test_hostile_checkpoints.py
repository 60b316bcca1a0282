"""Kind 12 of issue 14: every checkpoint that cannot be loaded is one line, exit 2, in every command."""

from __future__ import annotations

import os
import pickle
import re

import pytest

torch = pytest.importorskip("torch")

from reference_model.checkpoints import checkpoint_fits, load_checkpoint  # noqa: E402
from reference_model.errors import InputError  # noqa: E402

ARCH = {"encoder": "resnet18", "encoder_depth": 3, "decoder_channels": [8, 8, 8], "image_size": 32}


class Payload:
    def __reduce__(self):
        return (os.system, ("echo this must never run",))


@pytest.fixture()
def checkpoints(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"config": ARCH, "model": {"w": torch.zeros(2)}, "n_keypoints": 3}, good)
    data = good.read_bytes()
    files = {
        "truncated": data[: len(data) // 2],
        "empty": b"",
        "garbage": b"not a checkpoint at all" * 20,
    }
    paths = {"good": good}
    for name, content in files.items():
        paths[name] = tmp_path / f"{name}.pt"
        paths[name].write_bytes(content)
    paths["unsafe"] = tmp_path / "unsafe.pt"
    torch.save({"config": ARCH, "model": Payload()}, paths["unsafe"])
    paths["plain_pickle"] = tmp_path / "plain.pt"
    paths["plain_pickle"].write_bytes(pickle.dumps({"config": ARCH}))
    paths["list"] = tmp_path / "list.pt"
    torch.save([1, 2, 3], paths["list"])
    paths["foreign"] = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, paths["foreign"])
    paths["no_arch"] = tmp_path / "no_arch.pt"
    torch.save({"config": {"encoder": "resnet18"}, "model": {}}, paths["no_arch"])
    return paths


@pytest.mark.parametrize("name,reason", [
    ("truncated", "truncated or corrupt"), ("empty", "truncated or corrupt"), ("garbage", "not a PyTorch"),
    ("unsafe", "Python objects other than tensors"), ("plain_pickle", "not a PyTorch|Python objects other"),
    ("list", "no 'config' entry"), ("foreign", "no 'config' entry"), ("no_arch", "no 'config.encoder_depth'"),
])
def test_every_bad_checkpoint_is_one_line(checkpoints, capfd, name, reason):
    with pytest.raises(InputError) as info:
        load_checkpoint(checkpoints[name], required=("config", "model"))
    message = str(info.value)
    assert re.search(reason, message) and str(checkpoints[name]) in message and "\n" not in message
    assert "this must never run" not in capfd.readouterr().out


def test_good_checkpoint_loads(checkpoints):
    state = load_checkpoint(checkpoints["good"], required=("config", "model", "n_keypoints"))
    assert state["n_keypoints"] == 3 and torch.equal(state["model"]["w"], torch.zeros(2))


def test_missing_checkpoint(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_misfit_contents_are_one_line(checkpoints):
    model = torch.nn.Linear(2, 2)
    with pytest.raises(InputError, match=r"good.pt: its contents do not fit this model \(RuntimeError"):
        with checkpoint_fits(checkpoints["good"]):
            model.load_state_dict(load_checkpoint(checkpoints["good"])["model"])


@pytest.mark.parametrize("name", ["truncated", "unsafe", "foreign", "good"])
def test_predict_and_finetune_cli_one_line(tmp_path, checkpoints, capsys, name):
    from reference_model.cli import main

    for argv in (["predict", "--checkpoint", str(checkpoints[name]), "--out", str(tmp_path / "p.csv"),
                  "--data", str(tmp_path), "--device", "cpu"],
                 ["finetune", "--checkpoint", str(checkpoints[name]), "--attribute", "sex", "--out",
                  str(tmp_path / "ft"), "--data", str(tmp_path)]):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse usage error
            code = exc.code
        err = capsys.readouterr().err
        assert code == 2, (argv, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        if name != "good":
            assert "checkpoint" in err
        assert not (tmp_path / "p.csv").exists()


@pytest.mark.parametrize("name", ["truncated", "unsafe", "garbage", "foreign"])
def test_resume_from_a_bad_last_checkpoint_is_one_line(checkpoints, name):
    from reference_model.config import TrainConfig
    from reference_model.train import _resume

    with pytest.raises(InputError, match="checkpoint .*: (cannot be loaded|not a reference-model)"):
        _resume(None, None, TrainConfig(), checkpoints[name], epochs=3)  # fails before touching the run
