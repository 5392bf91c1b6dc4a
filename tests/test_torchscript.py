"""TorchScript archives are read for their tensors without running any of their code."""
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from clipae.cli import extract_main as main
from clipae.extractors import clip as clip_stream
from clipae.extractors.torchscript import TorchScriptError, is_torchscript, read_state_dict
from clipae.core.weights import WeightsError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit is deprecated for torch.export


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.ln = torch.nn.LayerNorm(4)
        self.fc = torch.nn.Linear(4, 4)
        self.register_buffer("steps", torch.tensor(3))
        self.register_buffer("scratch", torch.ones(2), persistent=False)
        self.attn_mask = torch.full((2, 2), -1.0)       # a plain attribute: not in the state dict

    def forward(self, x):
        return self.fc(self.ln(x)) + self.attn_mask.sum()


class Model(torch.nn.Module):
    """Nested modules, a ModuleList, half and integer tensors, a tied weight, a transposed view."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.blocks = torch.nn.ModuleList([Block(), Block()])
        self.positional_embedding = torch.nn.Parameter(torch.randn(3, 4).half())
        self.proj_t = torch.nn.Parameter(torch.randn(4, 6).t())
        self.blocks[1].fc.weight = self.blocks[0].fc.weight
        self.register_buffer("input_resolution", torch.tensor(224))
        self.scale = 2

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return x @ self.proj_t.t() + self.positional_embedding.float().sum()


@pytest.fixture(params=["trace", "script"])
def archive(request, tmp_path):
    model = Model().eval()
    module = torch.jit.trace(model, torch.randn(2, 4)) if request.param == "trace" else torch.jit.script(model)
    path = tmp_path / f"{request.param}.pt"
    torch.jit.save(module, path)
    return path


def test_the_state_dict_equals_torch_jit_load(archive):
    assert is_torchscript(archive)
    ours = read_state_dict(archive)
    theirs = torch.jit.load(str(archive), map_location="cpu").state_dict()   # our own file: safe to run here
    assert set(ours) == set(theirs) and "blocks.0.attn_mask" not in ours
    for key, value in theirs.items():
        assert ours[key].dtype == value.dtype and ours[key].shape == value.shape, key
        assert torch.equal(ours[key], value), key
    assert ours["positional_embedding"].dtype == torch.float16 and ours["input_resolution"].item() == 224
    assert torch.equal(ours["blocks.1.fc.weight"], ours["blocks.0.fc.weight"])


def test_not_torchscript(tmp_path):
    torch.save({"w": torch.ones(2)}, tmp_path / "plain.pt")
    assert not is_torchscript(tmp_path / "plain.pt")
    (tmp_path / "text.pt").write_text("hello")
    assert not is_torchscript(tmp_path / "text.pt")


class _System:
    """Pickles as a call of os.system: what a hostile data.pkl does."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def hostile_archive(valid: Path, out: Path, marker: Path) -> Path:
    """``valid`` with its data.pkl replaced by one that creates ``marker`` when unpickled."""
    with zipfile.ZipFile(valid) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith("/data.pkl"):
                data = pickle.dumps({"weight": _System(f"touch {marker}")}, protocol=2)
            dst.writestr(item, data)
    return out


def test_a_hostile_data_pkl_runs_nothing(archive, tmp_path):
    marker = tmp_path / "marker"
    bad = hostile_archive(archive, tmp_path / "bad.pt", marker)
    with zipfile.ZipFile(bad) as z:       # the file really is hostile: a plain unpickler runs it
        pickle.loads(z.read(next(n for n in z.namelist() if n.endswith("/data.pkl"))))
    assert marker.exists()
    marker.unlink()
    with pytest.raises(TorchScriptError, match="asks for posix.system|asks for os.system|asks for nt.system"):
        read_state_dict(bad)
    with pytest.raises(WeightsError, match="cannot load .* as a TorchScript CLIP checkpoint"):
        clip_stream.load_clip_state(bad)
    assert not marker.exists()


def test_a_hostile_clip_checkpoint_on_the_command_line(archive, tmp_path, capsys):
    marker = tmp_path / "marker"
    bad = hostile_archive(archive, tmp_path / "ViT-B-16.pt", marker)
    (tmp_path / "video.mp4").write_bytes(b"")
    rc = main([str(tmp_path / "video.mp4"), str(tmp_path / "out"), "--streams", "clip", "--weights", f"clip={bad}"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"clipae-extract: error: cannot load {bad} as a TorchScript CLIP checkpoint: data.pkl asks for ")
    assert not marker.exists()


class WithSetstate(torch.nn.Module):
    """Saved through __getstate__; torch.jit.load runs __setstate__, which changes the weight."""

    def __init__(self):
        super().__init__()
        self.register_buffer("weight", torch.zeros(2))

    @torch.jit.export
    def __getstate__(self):
        return (self.weight, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, bool]):
        self.weight = state[0] + 7.0
        self.training = state[1]

    def forward(self, x):
        return x * self.weight


def test_setstate_code_is_not_run(tmp_path):
    path = tmp_path / "setstate.pt"
    torch.jit.save(torch.jit.script(WithSetstate()), path)
    assert torch.jit.load(str(path)).state_dict()["weight"].tolist() == [7.0, 7.0]   # its code ran
    with pytest.raises(TorchScriptError, match="__setstate__ would have to run"):
        read_state_dict(path)
    with pytest.raises(WeightsError, match="__setstate__ would have to run"):
        clip_stream.load_clip_state(path)


def test_a_damaged_archive_is_one_error(archive, tmp_path):
    bad = tmp_path / "short.pt"
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if "/data/" in item.filename:
                data = data[: len(data) // 2]
            dst.writestr(item, data)
    with pytest.raises(TorchScriptError, match="bytes, not"):
        read_state_dict(bad)
