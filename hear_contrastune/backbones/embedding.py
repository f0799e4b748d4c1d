"""A backbone's scene embeddings of audio and of a dataset's clips, without gradients.

Below the HEAR API and the training loop alike: `hear_api` checks and chunks its callers' audio
here, model selection embeds valid clips here every epoch, and `embed` a task's splits. Audio
goes through in chunks of clips sized by the backbone's `max_batch_samples`, so memory stays
bounded for any number and length of clips.
"""

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from hear_contrastune.backbones.base import Backbone
from hear_contrastune.data.loading import DEFAULT_WORKERS, ClipDataset, clip_batches, length_batches

# Integer PCM is scaled to [-1, 1) by its full scale, as soundfile reads it as float.
PCM_SCALE = {torch.int16: 2.0**15, torch.int32: 2.0**31}
PROGRESS_MIN_CLIPS = 200  # fewer clips than this embed without a progress bar


def audio_chunks(audio: Tensor | np.ndarray, backbone: Backbone) -> list[Tensor]:
    """The audio as float32 chunks on the backbone's device, checked as the HEAR API specifies:
    [n_sounds, n_samples] of float audio in [-1, 1] (a numpy array is taken as torch takes it;
    int16 / int32 PCM is scaled by its full scale; other dtypes and types, zero-length clips and
    NaN or inf samples are refused)."""
    if isinstance(audio, np.ndarray):
        audio = torch.from_numpy(np.ascontiguousarray(audio))
    if not isinstance(audio, Tensor):
        raise TypeError(f"audio must be a torch.Tensor (or numpy array) [n_sounds, n_samples], "
                        f"got {type(audio).__name__}")
    if audio.ndim != 2:
        raise ValueError(f"audio must be [n_sounds, n_samples], got shape {tuple(audio.shape)}")
    if audio.dtype in PCM_SCALE:
        audio = audio.to(torch.float32) / PCM_SCALE[audio.dtype]
    elif not audio.is_floating_point():
        raise ValueError(f"audio must be float in [-1, 1] (or int16/int32 PCM), got {audio.dtype}")
    if audio.shape[0] and audio.shape[1] == 0:
        raise ValueError("audio has 0 samples per sound: nothing to embed")
    if not torch.isfinite(audio).all():
        raise ValueError("audio holds NaN or inf samples")
    if audio.shape[0] == 0:
        return []
    per_chunk = max(1, backbone.max_batch_samples // max(1, audio.shape[1]))
    return [c.to(backbone.device, torch.float32) for c in audio.split(per_chunk)]


@torch.no_grad()
def scene_embeddings(backbone: Backbone, audio: Tensor | np.ndarray) -> Tensor:
    """[n_sounds, n_samples] -> [n_sounds, embedding_size] on the backbone's device, in eval
    mode (the caller puts a training backbone back in train mode)."""
    backbone.eval()
    chunks = audio_chunks(audio, backbone)
    if not chunks:  # no sounds: no embeddings
        return torch.empty(0, backbone.embedding_size, device=backbone.device)
    return torch.cat([backbone(chunk) for chunk in chunks])


def embed_clips(backbone: Backbone, dataset: ClipDataset, indices: Sequence[int] | None = None,
                workers: int = DEFAULT_WORKERS, desc: str = "") -> Tensor:
    """Scene embeddings [n, d] of the dataset's clips (all, or `indices`, in that order),
    streamed from disk in batches of equal length; on the backbone's device."""
    indices = list(range(len(dataset))) if indices is None else list(indices)
    lengths = dataset.lengths()
    batches = length_batches(lengths, indices, backbone.max_batch_samples)
    device = backbone.device
    loader = clip_batches(dataset, batches, workers, pin_memory=device.type == "cuda")
    rows = {i: row for row, i in enumerate(indices)}
    out = torch.empty(len(indices), backbone.embedding_size, device=device)
    bar = tqdm(loader, desc=desc or "embed", unit="batch", leave=False, total=len(batches),
               disable=len(indices) < PROGRESS_MIN_CLIPS)
    for audio, idx in bar:
        emb = scene_embeddings(backbone, audio.to(device, non_blocking=True))
        # float32 rows even from a caller's autocast region (bf16 embeddings)
        out[torch.tensor([rows[int(i)] for i in idx], device=device)] = emb.to(out.dtype)
    return out
