"""hear-contrastune: contrastively tuned audio encoders behind the HEAR 2021 API.

`import hear_contrastune` is a HEAR module: `load_model`, `get_scene_embeddings`,
`get_timestamp_embeddings`.
"""

from hear_contrastune.hear_api import (
    HearModel,
    get_scene_embeddings,
    get_timestamp_embeddings,
    load_model,
)

__all__ = ["HearModel", "get_scene_embeddings", "get_timestamp_embeddings", "load_model"]
