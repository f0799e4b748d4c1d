"""Hub names and remote code for `hf:` backbones, offline: a hub name that is not cached is one
line naming the model and the fix; a cached one loads through `from_pretrained`; a model
shipping its own code runs only with trust_remote_code=1, which its checkpoint keeps."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

import transformers  # noqa: E402
from backbone_checks import supcon_losses  # noqa: E402
from hf_tiny import save_whisper  # noqa: E402

import hear_contrastune  # noqa: E402
from hear_contrastune.backbones import build_backbone  # noqa: E402
from hear_contrastune.backbones.checkpoint import save_checkpoint  # noqa: E402
from hear_contrastune.errors import UserError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BUILD = ("import sys\nfrom hear_contrastune.backbones import build_backbone\n"
         "from hear_contrastune.errors import UserError\n"
         "try:\n    print(build_backbone(sys.argv[1]).spec)\n"
         "except UserError as e:\n    print('error:', e)\n")


def build_offline(spec: str, hf_home: Path) -> str:
    """What building `spec` prints in a fresh process with the hub switched off."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(hf_home)}
    env.pop("HF_HUB_CACHE", None)
    done = subprocess.run([sys.executable, "-c", BUILD, spec], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_hub_names_load_from_the_cache_and_fail_in_one_line_offline(tmp_path):
    message = build_offline("hf:openai/whisper-tiny?pad=30", tmp_path / "empty")
    assert message.count("\n") == 0 and message.startswith("error: hf:openai/whisper-tiny?pad=30")
    assert "HF_HUB_OFFLINE=1" in message and "--local-dir /models/whisper-tiny" in message
    # the same name, cached as the hub client stores a download: loads offline, spec kept
    snapshot = tmp_path / "home" / "hub" / "models--tiny-org--whisper" / "snapshots" / ("0" * 40)
    save_whisper(snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    assert build_offline("hf:tiny-org/whisper?pad=30", tmp_path / "home") == \
        "hf:tiny-org/whisper?pad=30"
    # a relative folder of that shape is still a folder when it exists
    assert not build_offline("hf:tiny-org/whisper", tmp_path / "home").startswith("error")


REMOTE_CONFIG = '''from transformers import Wav2Vec2Config


class TinyRemoteConfig(Wav2Vec2Config):
    model_type = "tiny-remote-audio"
'''
REMOTE_MODEL = '''from transformers import Wav2Vec2Model

from .configuration_tiny_remote import TinyRemoteConfig


class TinyRemoteModel(Wav2Vec2Model):
    config_class = TinyRemoteConfig
'''


def save_remote_code_model(folder: Path) -> None:
    """A wav2vec2-like model whose classes live in the folder (as MERT's do): config.json
    names them in its auto_map."""
    folder.mkdir(parents=True)
    config = transformers.Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16, 16, 16), conv_stride=(5, 4, 4), conv_kernel=(10, 4, 4),
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, vocab_size=8)
    torch.manual_seed(0)
    transformers.Wav2Vec2Model(config).save_pretrained(folder)
    transformers.Wav2Vec2FeatureExtractor().save_pretrained(folder)
    (folder / "configuration_tiny_remote.py").write_text(REMOTE_CONFIG)
    (folder / "modeling_tiny_remote.py").write_text(REMOTE_MODEL)
    saved = json.loads((folder / "config.json").read_text())
    saved.update(model_type="tiny-remote-audio", auto_map={
        "AutoConfig": "configuration_tiny_remote.TinyRemoteConfig",
        "AutoModel": "modeling_tiny_remote.TinyRemoteModel"})
    (folder / "config.json").write_text(json.dumps(saved))


def test_remote_code_only_when_asked_and_kept_by_the_checkpoint(tmp_path):
    folder = tmp_path / "tiny-remote"
    save_remote_code_model(folder)
    with pytest.raises(UserError, match="ships its own code .* add trust_remote_code=1"):
        build_backbone(f"hf:{folder}")
    backbone = build_backbone(f"hf:{folder}?trust_remote_code=1")
    assert type(backbone.model).__name__ == "TinyRemoteModel"
    assert backbone.spec == f"hf:{folder}?trust_remote_code=1"
    supcon_losses(backbone, steps=2)
    path = tmp_path / "best.pt"
    save_checkpoint(path, backbone, {"task": "tones"})
    model = hear_contrastune.load_model(str(path))
    assert type(model.backbone.model).__name__ == "TinyRemoteModel"
    audio = 0.3 * torch.randn(2, 16000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = backbone.eval()(audio)
    torch.testing.assert_close(hear_contrastune.get_scene_embeddings(audio, model), expected)
    # remote code of another kind: refused, naming what is supported
    other = tmp_path / "other"
    shutil.copytree(folder, other)
    (other / "configuration_tiny_remote.py").write_text(
        REMOTE_CONFIG.replace("Wav2Vec2Config", "PretrainedConfig"))
    saved = json.loads((other / "config.json").read_text())
    del saved["conv_stride"]
    (other / "config.json").write_text(json.dumps(saved))
    with pytest.raises(UserError, match="no wav2vec2-style conv feature encoder"):
        build_backbone(f"hf:{other}?trust_remote_code=1")
