"""Tiny randomly initialised CLAP and Whisper folders, as `save_pretrained` writes them (sizes
after transformers' own tests: CLAP audio hidden size 32, depths [2, 2]; a Whisper encoder with
max_source_positions 30, i.e. a 0.6 s window)."""

from pathlib import Path

import torch
import transformers

CLAP_AUDIO = dict(spec_size=64, num_mel_bins=16, window_size=4, patch_size=2, patch_stride=2,
                  hidden_size=32, patch_embeds_hidden_size=16, projection_dim=24, depths=[2, 2],
                  num_attention_heads=[2, 2], num_hidden_layers=2, hidden_dropout_prob=0.0)
#: samples of the tiny Whisper window (30 tokens of 2 mel frames of 160 samples)
WHISPER_WINDOW = 30 * 2 * 160


def save_clap(folder: Path, fused: bool) -> None:
    """fused: a whole ClapModel with the fusion variant and the extractor's `fusion` truncation;
    else a ClapAudioModelWithProjection with `rand_trunc` (the unfused models' setting)."""
    torch.manual_seed(0)
    audio = transformers.ClapAudioConfig(**CLAP_AUDIO, enable_fusion=fused,
                                         fusion_type="aff_2d" if fused else None)
    if fused:
        text = transformers.ClapTextConfig(vocab_size=99, hidden_size=32, num_hidden_layers=1,
                                           num_attention_heads=2, intermediate_size=37,
                                           projection_dim=24)
        model = transformers.ClapModel(transformers.ClapConfig(
            text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=24))
    else:
        model = transformers.ClapAudioModelWithProjection(audio)
    model.save_pretrained(folder)
    transformers.ClapFeatureExtractor(
        feature_size=16, max_length_s=1,
        truncation="fusion" if fused else "rand_trunc").save_pretrained(folder)


def save_whisper(folder: Path) -> None:
    """A WhisperForConditionalGeneration (encoder and decoder) and its 80-mel extractor."""
    torch.manual_seed(0)
    config = transformers.WhisperConfig(
        vocab_size=99, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
        suppress_tokens=[], begin_suppress_tokens=[], d_model=32, encoder_layers=2,
        decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=80, max_source_positions=30,
        max_target_positions=20, dropout=0.0)
    transformers.WhisperForConditionalGeneration(config).save_pretrained(folder)
    transformers.WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)
