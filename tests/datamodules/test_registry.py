"""The registry against DATASETS.md (names, tasks, class counts) and the real data directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from datamodules.download import sha256sum
from datamodules.loading import _choose_source
from datamodules.registry import REGISTRY, dataset_names, get_spec
from scrcl.errors import UserError

ROOT = Path(__file__).resolve().parents[2]

# DATASETS.md §A (paper) and §B (local): name -> (task, classes)
PAPER = {
    "tumor": ("sc", 6), "diaphragm": ("sc", 5), "lung": ("sc", 11), "trachea": ("sc", 4), "human_esc": ("sc", 7),
    "zeisel": ("sc", 9), "bladder": ("sc", 4), "limb_muscle": ("sc", 6), "spleen": ("sc", 5), "baron_human": ("sc", 14),
    **{f"dlpfc_{s}": ("st", 7) for s in ("151507", "151508", "151509", "151510", "151673", "151674", "151675", "151676")},
    **{f"dlpfc_{s}": ("st", 5) for s in ("151669", "151670", "151671", "151672")},
    "human_breast_cancer": ("st", 20), "mouse_brain_anterior": ("st", 52), "mouse_embryo_e9_5": ("st", 12),
}
LOCAL = {
    "pbmc68k": ("sc", 10), "pbmc10x": ("sc", 8), "mouse_bladder_han": ("sc", 16), "baron_mouse1": ("sc", 13),
    "baron_mouse2": ("sc", 13), "pollen": ("sc", 11),
}
LOCAL_SPATIAL = ["dlpfc_151673", "dlpfc_151674", "dlpfc_151675", "dlpfc_151510"]


def test_every_dataset_of_datasets_md_is_registered_with_its_task_and_classes():
    assert set(dataset_names()) == set(PAPER) | set(LOCAL)
    for name, (task, n_classes) in {**PAPER, **LOCAL}.items():
        spec = REGISTRY[name]
        assert (spec.task, spec.n_classes) == (task, n_classes), name
        assert spec.paper == (name in PAPER), name


def test_per_dataset_configs_exist_only_for_paper_datasets():
    configs = {p.stem for p in (ROOT / "configs/datasets").glob("*.yaml")}
    assert configs <= set(PAPER)
    assert not configs & set(LOCAL)  # §B data run on the generic defaults


@pytest.mark.parametrize("name", list(LOCAL) + LOCAL_SPATIAL)
def test_local_data_is_found_and_matches_its_checksum(data_dir, name):
    spec = get_spec(name)
    source = _choose_source(spec, data_dir)
    if name == "pbmc68k":  # scanpy's own subset, embedded in the package: no file in the data directory
        assert source.reader == "pbmc68k" and not source.files
        return
    assert source.files
    for f in source.files.values():
        path = data_dir / f.path
        assert path.is_file(), path
        assert f.sha256 and sha256sum(path) == f.sha256, path
    if name in LOCAL_SPATIAL:
        assert source.reader == "h5ad" and "subset" in source.note


def test_names_are_case_and_separator_insensitive():
    assert get_spec("PBMC10X").name == "pbmc10x"
    assert get_spec(" DLPFC-151673 ").name == "dlpfc_151673"
    assert get_spec("dlpfc.151510").name == "dlpfc_151510"


@pytest.mark.parametrize("typo, suggestion", [("pbmc10", "pbmc10x"), ("dlpfc151673", "dlpfc_151673"), ("human_breast", "human_breast_cancer"), ("baron", "baron_human")])
def test_unknown_names_suggest_the_closest(typo, suggestion):
    with pytest.raises(UserError, match=f"unknown dataset '{typo}'; did you mean .*{suggestion}"):
        get_spec(typo)


def test_a_far_name_lists_every_dataset():
    with pytest.raises(UserError, match="known datasets: .*pbmc68k") as err:
        get_spec("qqqqqqqq")
    assert "\n" not in str(err.value)


def test_every_dataset_says_where_to_get_it():
    for spec in REGISTRY.values():
        downloadable = any(all(f.urls for f in s.files.values()) for s in spec.sources if s.files)
        embedded = any(not s.files for s in spec.sources)
        assert downloadable or embedded or spec.hint, spec.name


def test_published_configs_state_the_reference_optimizer_and_generic_ones_keep_their_own():
    """Every configs/datasets/*.yaml sets the reference's Adam + L2 itself (scRNA-seq and spatial alike), and the
    project's own choices (AdamW) stay in the generic configs, which the local datasets and users' files get."""
    from scrcl.train.config import dataset_config, generic_config, resolve_config

    configs = sorted(p.stem for p in (ROOT / "configs/datasets").glob("*.yaml"))
    assert configs
    for name in configs:
        assert dataset_config(name)["optimizer"] == "adam", name
        resolved = resolve_config(dataset=name)
        assert resolved["optimizer"] == "adam" and resolved["gene_graph"] == "knn" and resolved["graph_pcs"] is None, name
    assert generic_config("sc")["optimizer"] == generic_config("st")["optimizer"] == "adamw"
    for name in LOCAL:  # the generic config's own values
        assert resolve_config(dataset=name)["optimizer"] == generic_config(REGISTRY[name].task)["optimizer"]
    assert resolve_config(dataset="lung", overrides={"optimizer": "adamw"})["optimizer"] == "adamw"  # flags still win


def test_derived_files_are_rebuilt_from_public_originals_at_fixed_commits():
    """No derived file is downloaded as such: each names a recipe and its originals, each a GitHub file at a fixed
    commit with its sha256 and size (what `make data` downloads and reports)."""
    import re

    from datamodules.derive import RECIPES
    from datamodules.registry import known_files

    derived = [f for f in known_files().values() if f.path.startswith("derived/")]
    assert sorted(f.path for f in derived) == [
        "derived/DLPFC_151510.h5ad", "derived/DLPFC_151673.h5ad", "derived/DLPFC_151674.h5ad",
        "derived/DLPFC_151675.h5ad", "derived/Pollen_SIMLR.h5ad"]
    for f in derived:
        assert f.build is not None and f.build.recipe in RECIPES and f.sha256 and not f.urls, f.path
        for original in f.build.inputs.values():
            assert original.build is None and original.sha256 and original.size, original.path
            assert original.urls and all(
                re.match(r"https://raw\.githubusercontent\.com/[^/]+/[^/]+/[0-9a-f]{40}/", url) for url in original.urls)
