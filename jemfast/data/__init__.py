"""The speech front end: manifests, audio, log-Mel features, a feature cache, datasets and a synthetic corpus.

Data flows one way::

    corpus --importers--> manifest CSV --audio+features--> FeatureCache --datasets--> DataLoader

``generate_corpus`` makes a deterministic speech-like corpus (wav files plus
manifests) for each task type, so everything runs without a download.
"""

from __future__ import annotations

from jemfast._lazy import lazy_exports

# Public name -> the module that defines it. Loaded on first use, so that importing one
# light module (``jemfast.data.manifest``) does not import audio, torch and librosa.
_EXPORTS = {
    "AudioError": "audio",
    "AudioInfo": "audio",
    "CASIA_EMOTIONS": "importers",
    "CacheEntry": "cache",
    "ChunkDataset": "datasets",
    "DEFAULT_AGE_BOUNDARIES": "importers",
    "EMOTIONS": "synthetic",
    "EqualLengthBatchSampler": "datasets",
    "FeatureCache": "cache",
    "FeatureRecipe": "features",
    "ImportReport": "importers",
    "ManifestRow": "manifest",
    "SPLITS": "manifest",
    "SkippedUtterance": "cache",
    "TASKS": "synthetic",
    "TorchLogMel": "features",
    "UtteranceDataset": "datasets",
    "age_group": "importers",
    "age_group_names": "importers",
    "audio_info": "audio",
    "class_names": "synthetic",
    "collate_utterances": "datasets",
    "generate_corpus": "synthetic",
    "import_ap17_olr": "importers",
    "import_casia": "importers",
    "import_kaldi_dir": "importers",
    "import_voxceleb_age": "importers",
    "list_subsets": "datasets",
    "load_audio": "audio",
    "logmel": "features",
    "make_eval_loader": "datasets",
    "make_subset_loaders": "datasets",
    "make_train_loader": "datasets",
    "mel_filters": "features",
    "read_kaldi_dir": "importers",
    "read_labels": "manifest",
    "read_manifest": "manifest",
    "repeat_pad": "datasets",
    "resample": "audio",
    "to_mono": "audio",
    "write_labels": "manifest",
    "write_manifest": "manifest",
    "write_wav": "audio",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
