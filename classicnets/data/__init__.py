"""Datasets for classicnets: file formats, verified downloads, the registry, and fast loaders.

    splits = load_dataset("fashion-mnist")                  # Splits: train/test ArrayDatasets + metadata
    train, val = split_validation(splits.train, 0.1, seed=0)
    loader = InMemoryLoader(train, 128, shuffle=True, mean=splits.mean, std=splits.std, pad_to=32)
"""

from .arrays import ArrayDataset, Splits, split_validation
from .datasets import DATASETS, DatasetSpec, RemoteFile, load_dataset
from .download import download
from .errors import ChecksumError, DataFormatError, DatasetNotFoundError, DownloadError
from .folder import ImageFolderData
from .loader import InMemoryLoader

__all__ = ["load_dataset", "DATASETS", "DatasetSpec", "RemoteFile", "Splits", "ArrayDataset",
           "split_validation", "InMemoryLoader", "ImageFolderData", "download", "DataFormatError",
           "ChecksumError", "DatasetNotFoundError", "DownloadError"]
