"""Data layer: registry → load → preprocess → graphs → LightningDataModule."""

from datamodules.registry import REGISTRY, dataset_names, get_spec

__all__ = ["REGISTRY", "dataset_names", "get_spec"]
