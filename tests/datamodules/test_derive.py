"""Derived files rebuilt from their public originals equal the ones the registry records (datamodules/derive.py).

Each build reads the originals from the data directory (linked into an empty directory, as a download would place
them) and is compared with the data directory's own derived file: shape, cell and gene names, labels, values,
coordinates, everything else in the file, and its sha256 (the registered one: the rebuild is byte-identical).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from datamodules.derive import obtain
from datamodules.download import sha256sum
from datamodules.registry import get_spec
from scrcl.errors import UserError

DERIVED = ["pollen", "dlpfc_151673", "dlpfc_151674", "dlpfc_151675", "dlpfc_151510"]


def derived_file(name: str):
    file = get_spec(name).sources[0].files["data"]
    assert file.path.startswith("derived/") and file.build is not None
    return file


def link_originals(file, data_dir: Path, root: Path) -> None:
    for original in file.build.inputs.values():
        (root / original.path).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(data_dir / original.path, root / original.path)


def files_under(root: Path) -> list[str]:
    return sorted(str(Path(d, f).relative_to(root)) for d, _, names in os.walk(root) for f in names)


@pytest.mark.parametrize("name", DERIVED)
def test_rebuilt_file_equals_the_registered_one(data_dir, tmp_path, name):
    file = derived_file(name)
    link_originals(file, data_dir, tmp_path)
    built = obtain(tmp_path, file, progress=False)
    assert built == tmp_path / file.path
    rebuilt, shared = ad.read_h5ad(built), ad.read_h5ad(data_dir / file.path)

    assert rebuilt.shape == shared.shape
    assert list(rebuilt.obs_names) == list(shared.obs_names)
    assert list(rebuilt.var_names) == list(shared.var_names)
    pd.testing.assert_frame_equal(rebuilt.obs, shared.obs)  # labels (NaN where unlabelled) and grid positions
    pd.testing.assert_frame_equal(rebuilt.var, shared.var)
    label = "cell_type1" if name == "pollen" else "layer_guess"
    assert rebuilt.obs[label].isna().sum() == shared.obs[label].isna().sum()
    assert rebuilt.X.dtype == shared.X.dtype == np.float32 and sp.issparse(rebuilt.X) == sp.issparse(shared.X)
    assert (sp.csr_matrix(rebuilt.X) != sp.csr_matrix(shared.X)).nnz == 0
    assert set(rebuilt.obsm) == set(shared.obsm)
    for key in shared.obsm:  # the spot coordinates
        np.testing.assert_array_equal(rebuilt.obsm[key], shared.obsm[key])
    assert dict(rebuilt.uns) == dict(shared.uns)
    assert sha256sum(built) == file.sha256 == sha256sum(data_dir / file.path)


def test_a_rebuild_with_another_checksum_is_not_kept(data_dir, tmp_path):
    file = derived_file("pollen")
    link_originals(file, data_dir, tmp_path)
    before = files_under(tmp_path)
    wrong = dataclasses.replace(file, sha256="0" * 64)
    with pytest.raises(UserError) as err:
        obtain(tmp_path, wrong, progress=False)
    message = str(err.value)
    assert "\n" not in message and "0" * 64 in message and file.sha256 in message and "requirements.txt" in message
    assert files_under(tmp_path) == before  # neither the file nor a temporary one


def test_an_original_that_is_not_an_r_file_is_one_line(tmp_path):
    file = derived_file("pollen")
    original = tmp_path / file.build.inputs["data"].path
    original.parent.mkdir(parents=True)
    original.write_text("<html>not found</html>\n")
    with pytest.raises(UserError) as err:
        obtain(tmp_path, file, progress=False)
    assert str(original) in str(err.value) and "R data file" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / file.path).exists()
