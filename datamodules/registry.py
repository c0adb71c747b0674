"""Every dataset scrcl knows by name: where its files live, how to read them, what its labels are.

This table is data. Paths are relative to the data directory (``--data-dir`` > ``SCRCL_DATA_DIR`` >
``./data``). An entry may accept several *sources* (say the full public download and a local gene
subset); the first source whose files are all present is used, otherwise the first source that can
be downloaded is fetched. Per-dataset hyperparameters are not here: they live in
``configs/datasets/<name>.yaml``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from scrcl.errors import UserError

GH = "https://raw.githubusercontent.com"
ZENODO_SCMAE = "https://zenodo.org/records/8175767/files"
DLPFC_S3 = "https://spatial-dlpfc.s3.us-east-2.amazonaws.com/h5"
HUMANPILOT = f"{GH}/LieberInstitute/HumanPilot/044446d6bd8fc154aa74f7be62ec67effb1ec376/10X"
SEDR = f"{GH}/JinmiaoChenLab/SEDR_analyses/00084465fa72cfccf54cee0d5b914cdadaee9961/data/DLPFC"
CELL_BLAST_HINT = "Cell BLAST (https://cblast.gao-lab.org/download) or Zenodo 8175767 (X/Y .h5 layout)"


@dataclass(frozen=True)
class DataFile:
    """One file of a source: its path under the data directory and where to download it."""

    path: str
    urls: tuple[str, ...] = ()
    sha256: str | None = None


@dataclass(frozen=True)
class Source:
    """One way to obtain a dataset: a reader and the files it needs (role -> file)."""

    reader: str  # h5ad | xy_h5 | cellblast_h5 | visium | pbmc68k
    files: dict[str, DataFile]
    options: dict = field(default_factory=dict)
    note: str = ""  # what this source is, recorded in the run (e.g. "5000-gene subset")
    label_key: str | None = None  # where this layout keeps the labels, if not the dataset's label_key


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    task: str  # "sc" (scRNA-seq cell types) or "st" (spatial domains)
    sources: tuple[Source, ...]
    label_key: str | None
    n_classes: int
    paper: bool  # one of the paper's datasets (has published per-dataset settings)
    hint: str = ""  # where a user gets the data when no source can be downloaded


def _quake(name: str, source_name: str, n_classes: int, zenodo: str | None = None) -> DatasetSpec:
    """The scRNA-seq paper datasets all come in the same three layouts."""
    xy_urls = (f"{ZENODO_SCMAE}/{zenodo}",) if zenodo else ()
    return DatasetSpec(
        name=name,
        task="sc",
        sources=(
            Source("h5ad", {"data": DataFile(f"scrna/{source_name}.h5ad")}, note="Cell BLAST h5ad"),
            Source("cellblast_h5", {"data": DataFile(f"scrna/{source_name}/data.h5")}, note="Cell BLAST data.h5"),
            Source("xy_h5", {"data": DataFile(f"scrna/{source_name}.h5", xy_urls)}, note="X/Y h5 (scMAE)", label_key="Y"),
        ),
        label_key="cell_type1",
        n_classes=n_classes,
        paper=True,
        hint=CELL_BLAST_HINT,
    )


def _dlpfc(sample: str, n_classes: int, local: DataFile | None = None, note: str = "") -> DatasetSpec:
    """A DLPFC Visium slice: full download (counts from S3, positions + labels from HumanPilot)."""
    full = Source(
        "visium",
        {
            "counts": DataFile(
                f"spatial/DLPFC/{sample}/{sample}_filtered_feature_bc_matrix.h5",
                (f"{DLPFC_S3}/{sample}_filtered_feature_bc_matrix.h5",),
            ),
            "positions": DataFile(
                f"spatial/DLPFC/HumanPilot/10X/{sample}/tissue_positions_list.txt",
                (f"{HUMANPILOT}/{sample}/tissue_positions_list.txt",),
            ),
            "labels": DataFile(
                "spatial/DLPFC/HumanPilot/barcode_level_layer_map.tsv",
                (f"{HUMANPILOT}/barcode_level_layer_map.tsv",),
                "b5d81f0e61810bb74d8a02495eda8f84e0eb9335211dcdd03513d747036e5ca9",
            ),
        },
        # HumanPilot's map: no header; barcode, sample id, layer.
        options={"label_format": "humanpilot", "sample": sample},
        note="full 10x Visium download",
    )
    sources = (full,) if local is None else (Source("h5ad", {"data": local}, note=note), full)
    return DatasetSpec(
        name=f"dlpfc_{sample}",
        task="st",
        sources=sources,
        label_key="layer_guess",
        n_classes=n_classes,
        paper=True,
        hint=f"{DLPFC_S3}/{sample}_filtered_feature_bc_matrix.h5 into spatial/DLPFC/{sample}/",
    )


_TENX = "https://cf.10xgenomics.com/samples/spatial-exp/1.1.0"
_SCDCC = f"{GH}/ttgump/scDCC/142e4e0370f4134751e92a160f95f97fce8db369/data/Small_Datasets"
_SCCDCG = f"{GH}/XPgogogo/scCDCG/598e238ae79fa46f0d39ffcf0e52a469aa78da82/datasets"

_SPECS: list[DatasetSpec] = [
    # --- A. the paper's scRNA-seq datasets (downloaded from their public sources)
    _quake("tumor", "li_tumor", 6),
    _quake("diaphragm", "Quake_Smart-seq2_Diaphragm", 5),
    _quake("lung", "Quake_Smart-seq2_Lung", 11, "Quake_Smart-seq2_Lung.h5"),
    _quake("trachea", "Quake_Smart-seq2_Trachea", 4),
    _quake("human_esc", "human_ESC", 7),
    _quake("zeisel", "Zeisel", 9),
    _quake("bladder", "Quake_10x_Bladder", 4),
    _quake("limb_muscle", "Quake_10x_Limb_Muscle", 6, "Limb_Muscle.h5"),
    _quake("spleen", "Quake_10x_Spleen", 5, "Quake_10x_Spleen.h5"),
    _quake("baron_human", "Baron_human", 14, "Baron.h5"),
    # --- A. the paper's spatial datasets
    _dlpfc("151507", 7),
    _dlpfc("151508", 7),
    _dlpfc("151509", 7),
    _dlpfc(
        "151510",
        7,
        DataFile("derived/DLPFC_151510.h5ad", sha256="05e9ce092038f1bd6ed76e987161f68027793c79e9a8c35b14ec9091c3b71e26"),
        "local 500-gene subset (DR.SC)",
    ),
    _dlpfc("151669", 5),
    _dlpfc("151670", 5),
    _dlpfc("151671", 5),
    _dlpfc("151672", 5),
    _dlpfc(
        "151673",
        7,
        DataFile("derived/DLPFC_151673.h5ad", sha256="0df83b7441021caecf360ffbe1f2d6a95b96d48254a8e8cedd11c716f385edcc"),
        "local 5000-gene subset (Banksy)",
    ),
    _dlpfc(
        "151674",
        7,
        DataFile("derived/DLPFC_151674.h5ad", sha256="673c75e69ac71f3fc5e0af17f5438dfde19461da769ad6b47820e1faf364133e"),
        "local 5000-gene subset (Banksy)",
    ),
    _dlpfc(
        "151675",
        7,
        DataFile("derived/DLPFC_151675.h5ad", sha256="f9a16157692271b00a79e820de9fbbeeb87225941d7001c563257632a76256ef"),
        "local 5000-gene subset (Banksy)",
    ),
    _dlpfc("151676", 7),
    DatasetSpec(
        name="human_breast_cancer",
        task="st",
        sources=(
            Source(
                "visium",
                {
                    "counts": DataFile(
                        "spatial/Human_Breast_Cancer/filtered_feature_bc_matrix.h5",
                        (
                            f"{_TENX}/V1_Breast_Cancer_Block_A_Section_1/"
                            "V1_Breast_Cancer_Block_A_Section_1_filtered_feature_bc_matrix.h5",
                        ),
                    ),
                    "positions": DataFile("spatial/Human_Breast_Cancer/Spatial-MGCN/spatial/tissue_positions_list.csv"),
                    "labels": DataFile(
                        "spatial/Human_Breast_Cancer/Spatial-MGCN/metadata.tsv",
                        sha256="6cc253edda084c5f0cc3159b78fffa5f8e912fe3f0beba1ceb793e81956c81b5",
                    ),
                },
                options={"label_format": "table"},
                note="10x Visium download + Spatial-MGCN labels",
            ),
        ),
        label_key="ground_truth",
        n_classes=20,
        paper=True,
        hint="the 10x Genomics V1_Breast_Cancer_Block_A_Section_1 filtered_feature_bc_matrix.h5",
    ),
    DatasetSpec(
        name="mouse_brain_anterior",
        task="st",
        sources=(Source("h5ad", {"data": DataFile("spatial/Mouse_Brain_Anterior.h5ad")}),),
        label_key="ground_truth",
        n_classes=52,
        paper=True,
        hint=(
            f"counts: {_TENX}/V1_Mouse_Brain_Sagittal_Anterior/V1_Mouse_Brain_Sagittal_Anterior_filtered_feature_bc_matrix.h5;"
            " labels: the GraphST data bundle https://zenodo.org/records/6925603 — combine them into an .h5ad with"
            " obs['ground_truth'] and obsm['spatial']"
        ),
    ),
    DatasetSpec(
        name="mouse_embryo_e9_5",
        task="st",
        sources=(Source("h5ad", {"data": DataFile("spatial/E9.5_E1S1.MOSTA.h5ad")}),),
        label_key="annotation",
        n_classes=12,
        paper=True,
        hint="MOSTA (https://db.cngb.org/stomics/mosta/download/), file E9.5_E1S1.MOSTA.h5ad",
    ),
    # --- B. local labelled data used by the tests and tables (generic defaults; not paper datasets)
    DatasetSpec(
        name="pbmc68k",
        task="sc",
        sources=(Source("pbmc68k", {}, note="scanpy.datasets.pbmc68k_reduced (ships with scanpy)"),),
        label_key="bulk_labels",
        n_classes=10,
        paper=False,
    ),
    DatasetSpec(
        name="pbmc10x",
        task="sc",
        sources=(
            Source(
                "xy_h5",
                {
                    "data": DataFile(
                        "scrna/scDCC/10X_PBMC_top2000.h5",
                        (f"{_SCDCC}/10X_PBMC_top2000.h5",),
                        "ec78ead405dfa988d6156c12068b49c0782ca58f5ed52c938d8ba8e8377eb16e",
                    )
                },
            ),
        ),
        label_key="Y",
        n_classes=8,
        paper=False,
    ),
    DatasetSpec(
        name="mouse_bladder_han",
        task="sc",
        sources=(
            Source(
                "xy_h5",
                {
                    "data": DataFile(
                        "scrna/scDCC/mouse_bladder_cell_top2000.h5",
                        (f"{_SCDCC}/mouse_bladder_cell_top2000.h5",),
                        "2a97282cf325a4b2a63c2b818be82c453007f29838c7280f30dadd01be4501ab",
                    )
                },
            ),
        ),
        label_key="Y",
        n_classes=16,
        paper=False,
    ),
    *[
        DatasetSpec(
            name=f"baron_mouse{i}",
            task="sc",
            sources=(
                Source(
                    "xy_h5",
                    {
                        "data": DataFile(
                            f"scrna/scCDCG/Maayan_Mouse_Pancreas_cell_{i}.h5",
                            (f"{_SCCDCG}/Maayan_Mouse_Pancreas_cell_{i}.h5",),
                            sha,
                        )
                    },
                ),
            ),
            label_key="Y",
            n_classes=13,
            paper=False,
        )
        for i, sha in (
            (1, "95f0502d9b12482f7e8a37191a06a2df1c8bf2822efeca9ae032545605059d8c"),
            (2, "858717b1144ed01203d8d03f6966d4df5e3726f09e0aacd359c148d6970acb2b"),
        )
    ],
    DatasetSpec(
        name="pollen",
        task="sc",
        sources=(
            Source(
                "h5ad",
                {
                    "data": DataFile(
                        "derived/Pollen_SIMLR.h5ad",
                        sha256="12e6d43c310364d882d160738fc02c5ea262962b08d4e018f94fc454e211cdae",
                    )
                },
                note="converted from SIMLR Test_3_Pollen.RData",
            ),
        ),
        label_key="cell_type1",
        n_classes=11,
        paper=False,
        hint="derived/Pollen_SIMLR.h5ad (converted from BatzoglouLabSU/SIMLR data/Test_3_Pollen.RData)",
    ),
]

REGISTRY: dict[str, DatasetSpec] = {spec.name: spec for spec in _SPECS}


def dataset_names() -> list[str]:
    return sorted(REGISTRY)


def get_spec(name: str) -> DatasetSpec:
    """Look a dataset up by case-insensitive name; an unknown name suggests the closest ones."""
    key = name.strip().lower().replace("-", "_").replace(".", "_")
    if key in REGISTRY:
        return REGISTRY[key]
    close = difflib.get_close_matches(key, REGISTRY, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else f"known datasets: {', '.join(dataset_names())}"
    raise UserError(f"unknown dataset '{name}'; {hint} (or pass your own file with --data PATH.h5ad)")
