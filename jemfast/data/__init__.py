"""The speech front end: manifests, audio, log-Mel features, a feature cache, datasets and a synthetic corpus.

Data flows one way::

    corpus --importers--> manifest CSV --audio+features--> FeatureCache --datasets--> DataLoader

``generate_corpus`` makes a deterministic speech-like corpus (wav files plus
manifests) for each task type, so everything runs without a download.
"""

from .audio import AudioError, AudioInfo, audio_info, load_audio, resample, to_mono, write_wav
from .cache import CacheEntry, FeatureCache, SkippedUtterance
from .datasets import (
    ChunkDataset,
    EqualLengthBatchSampler,
    UtteranceDataset,
    collate_utterances,
    list_subsets,
    make_eval_loader,
    make_subset_loaders,
    make_train_loader,
    repeat_pad,
)
from .features import FeatureRecipe, TorchLogMel, logmel, mel_filters
from .importers import (
    CASIA_EMOTIONS,
    DEFAULT_AGE_BOUNDARIES,
    ImportReport,
    age_group,
    age_group_names,
    import_ap17_olr,
    import_casia,
    import_kaldi_dir,
    import_voxceleb_age,
    read_kaldi_dir,
)
from .manifest import ManifestRow, read_labels, read_manifest, write_labels, write_manifest
from .synthetic import EMOTIONS, TASKS, class_names, generate_corpus

__all__ = [
    "AudioError",
    "AudioInfo",
    "CASIA_EMOTIONS",
    "CacheEntry",
    "ChunkDataset",
    "DEFAULT_AGE_BOUNDARIES",
    "EMOTIONS",
    "EqualLengthBatchSampler",
    "FeatureCache",
    "FeatureRecipe",
    "ImportReport",
    "ManifestRow",
    "SkippedUtterance",
    "TASKS",
    "TorchLogMel",
    "UtteranceDataset",
    "age_group",
    "age_group_names",
    "audio_info",
    "class_names",
    "collate_utterances",
    "generate_corpus",
    "import_ap17_olr",
    "import_casia",
    "import_kaldi_dir",
    "import_voxceleb_age",
    "list_subsets",
    "load_audio",
    "logmel",
    "make_eval_loader",
    "make_subset_loaders",
    "make_train_loader",
    "mel_filters",
    "read_kaldi_dir",
    "read_labels",
    "read_manifest",
    "repeat_pad",
    "resample",
    "to_mono",
    "write_labels",
    "write_manifest",
    "write_wav",
]
