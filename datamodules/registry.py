"""Every dataset scrcl knows by name: where its files live, how to read them, what its labels are.

This table is data. Paths are relative to the data directory (``--data-dir`` > ``SCRCL_DATA_DIR`` >
``./data``). An entry may accept several *sources* (say the full public download and a local gene
subset); the first source whose files are all present is used, otherwise the first source that can
be obtained is fetched. A file is obtained by download (its ``urls``, public files at fixed commits, checked
against ``sha256``) or, for a file the project derived from public originals, rebuilt from those originals
(its ``build``; ``datamodules/derive.py``). ``SCRCL_DATA_MIRROR`` rewrites every URL to a mirror
(``datamodules/download.py``). Per-dataset hyperparameters are not here: they live in
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
# The help text of every --data-dir flag (train.py, the benchmarks, python -m datamodules.prefetch).
DATA_DIR_HELP = ("data directory (default: $SCRCL_DATA_DIR, then ./data); a missing registry file is downloaded "
                 "there, from $SCRCL_DATA_MIRROR/<host>/<path> instead of https://<host>/<path> when that is set")
CELL_BLAST_HINT = "Cell BLAST (https://cblast.gao-lab.org/download) or Zenodo 8175767 (X/Y .h5 layout)"
# the public originals of the derived files, and the reference outputs, at fixed commits
BANKSY = f"{GH}/prabhakarlab/Banksy/2276ad331791d3894b055abf3478857dc69f5133/data"
DRSC = f"{GH}/feiyoung/DR.SC/64d95135ab79e3e42e86e4a2e31724d17bec29d5/data"
SIMLR = f"{GH}/BatzoglouLabSU/SIMLR/c94b2b1e088caadbca683cc07c4fc700e216a495/data"
SCRCL_RESULTS = f"{GH}/THPengL/scRCL/6da37870445a391953a3c85970a5ccf53c8e4b9a/results"


@dataclass(frozen=True)
class Build:
    """How a derived file is made: a recipe of ``datamodules/derive.py`` over public originals (role -> file)."""

    recipe: str
    inputs: dict[str, "DataFile"]
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class DataFile:
    """One file of a source: its path under the data directory and where to download it (or how to build it)."""

    path: str
    urls: tuple[str, ...] = ()
    sha256: str | None = None  # of the file itself: a download or a rebuild must equal it
    size: int | None = None  # bytes, where known: what downloading it costs (`make data` reports the total)
    build: Build | None = None  # made from public originals rather than downloaded


def _sized(path: str, url: str, sha256: str, size: int) -> DataFile:
    return DataFile(path, (url,), sha256, size)


# HumanPilot's spot positions of every DLPFC slice: sha256, bytes
_POSITIONS = {
    "151507": ("5c5be4dcd51c914bad02634f1ed2d96bd0c200ae487e236f644d94ded983efd0", 186265),
    "151508": ("cf10de46b124381a2cd28dbe3e8bdcfa469ceb5659f26de1039c9a5b9da1a257", 186319),
    "151509": ("badca077b07d5268bb222e7bfdd0b31d179fa97f51870e28f562ef4f961e8d6a", 186375),
    "151510": ("1152698bac69bbdc1eaa5e83ef0565492b4709ccf64abe113f7ef266b735edb4", 186399),
    "151669": ("00147e492d41a3724c413934ef777c94f72f15636933346783fcd3e7903bddb4", 186818),
    "151670": ("cf1cf68a6efe052f10b86b32c0b7f142d6d4bfcfa107aafa92c56234b08ec25a", 186856),
    "151671": ("fbf0e0b41bb6d10b0e87accc62fa1e17d5b5e0a7bd9f193173499c6c3f7d46b2", 186921),
    "151672": ("45e98bc3304158b3ab5a71e6851ccc95cdf723ce7b4e593ba5af9259cb3b66f1", 186985),
    "151673": ("c1ce0eafc855982bb2a9773f147ce6c5aef68dfd06600caa8a7e7a0e6f7cc5e8", 186583),
    "151674": ("bc8738299011382ad81a35d81c5bcb1546b17b5c10a5a6411baf9bc1f58acca7", 186575),
    "151675": ("2c857eeddd96898d5d17bd066ee9f55fb8f0c7c7758cb8c26f71dc95d60024ff", 186612),
    "151676": ("2b655c9ead1fa5686ef9a49ab8452d56cd849dc1d15779b215e4f9726ebe55c0", 186592),
}
# SEDR_analyses' metadata.tsv (the layer_guess scRCL reads), for the slices used here: sha256, bytes
_SEDR_METADATA = {
    "151507": ("0198f6d887d9360918a1c4e20bf009c426af31f7f5fa7326e1ca0eb4c15027a2", 1259237),
    "151510": ("83c0ef6403d1cf5a2659c05cfc912e5d666c1cb21348a4d5159cdeb3da5246cd", 1401611),
    "151673": ("1e6dcce1a6e0a7dcb8f0178521d3c39873be41bd5a9cdfc061f1b84a436a0d07", 1093371),
    "151674": ("a6ee7a6de23ff44db6269c399e524a6c6369522bafd1b1d876a67f56e4749af0", 1105552),
    "151675": ("75db54be0b2af812302d08934df0b5aa8a9d8a87629427fa358350df8dc6d8a7", 1092972),
}


def _positions(sample: str) -> DataFile:
    return _sized(f"spatial/DLPFC/HumanPilot/10X/{sample}/tissue_positions_list.txt",
                  f"{HUMANPILOT}/{sample}/tissue_positions_list.txt", *_POSITIONS[sample])


def _sedr_metadata(sample: str) -> DataFile:
    return _sized(f"spatial/DLPFC/SEDR_analyses/{sample}/metadata.tsv", f"{SEDR}/{sample}/metadata.tsv",
                  *_SEDR_METADATA[sample])


def _dlpfc_subset(sample: str, counts: DataFile, layout: str, counts_source: str, sha256: str, size: int) -> DataFile:
    """derived/DLPFC_<sample>.h5ad: a gene subset's counts from an R file, SEDR's labels and HumanPilot's positions."""
    provenance = (f"counts: {counts_source}; labels: SEDR_analyses metadata.tsv layer_guess; "
                  f"positions: LieberInstitute/HumanPilot 10X/{sample}/tissue_positions_list.txt")
    return DataFile(
        f"derived/DLPFC_{sample}.h5ad", sha256=sha256, size=size,
        build=Build("dlpfc_rda", {"counts": counts, "labels": _sedr_metadata(sample), "positions": _positions(sample)},
                    {"sample": sample, "layout": layout, "provenance": provenance}),
    )


def _banksy(sample: str, sha256: str, size: int, rda_sha256: str, rda_size: int) -> DataFile:
    rda = _sized(f"spatial/DLPFC/Banksy/dlpfc{sample}.rda", f"{BANKSY}/dlpfc{sample}.rda", rda_sha256, rda_size)
    return _dlpfc_subset(sample, rda, "banksy", f"prabhakarlab/Banksy@2276ad3 data/dlpfc{sample}.rda (5000 genes)",
                         sha256, size)


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


HUMANPILOT_LAYERS = _sized("spatial/DLPFC/HumanPilot/barcode_level_layer_map.tsv", f"{HUMANPILOT}/barcode_level_layer_map.tsv",
                           "b5d81f0e61810bb74d8a02495eda8f84e0eb9335211dcdd03513d747036e5ca9", 1372541)


def _dlpfc(sample: str, n_classes: int, local: DataFile | None = None, note: str = "") -> DatasetSpec:
    """A DLPFC Visium slice: full download (counts from S3, positions + labels from HumanPilot)."""
    full = Source(
        "visium",
        {
            "counts": DataFile(
                f"spatial/DLPFC/{sample}/{sample}_filtered_feature_bc_matrix.h5",
                (f"{DLPFC_S3}/{sample}_filtered_feature_bc_matrix.h5",),
            ),
            "positions": _positions(sample),
            "labels": HUMANPILOT_LAYERS,
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
        _dlpfc_subset(
            "151510",
            _sized("spatial/DLPFC/DR.SC/dlpfc151510.rda", f"{DRSC}/dlpfc151510.rda",
                   "ea00a1d0ab39724db7454cd364055264061c7a531265fc7bc06b169062f746b4", 1658609),
            "seurat",
            "feiyoung/DR.SC data/dlpfc151510.rda (500 genes)",
            "05e9ce092038f1bd6ed76e987161f68027793c79e9a8c35b14ec9091c3b71e26",
            2207327,
        ),
        "local 500-gene subset (DR.SC)",
    ),
    _dlpfc("151669", 5),
    _dlpfc("151670", 5),
    _dlpfc("151671", 5),
    _dlpfc("151672", 5),
    _dlpfc(
        "151673",
        7,
        _banksy("151673", "0df83b7441021caecf360ffbe1f2d6a95b96d48254a8e8cedd11c716f385edcc", 5718395,
                "280dad9b0014e9d5f776617584f83868930dec6f53c63853b4e2f6a6d00863c7", 2223630),
        "local 5000-gene subset (Banksy)",
    ),
    _dlpfc(
        "151674",
        7,
        _banksy("151674", "673c75e69ac71f3fc5e0af17f5438dfde19461da769ad6b47820e1faf364133e", 6539882,
                "fdd630a84aaa6cb7b1cf6f3880e91353071cd8776e034fbed59be8fe55efd565", 2553811),
        "local 5000-gene subset (Banksy)",
    ),
    _dlpfc(
        "151675",
        7,
        _banksy("151675", "f9a16157692271b00a79e820de9fbbeeb87225941d7001c563257632a76256ef", 4947374,
                "a0d02122024d765ca3835f0b6af07ac39fd648089d54a149bf0756f5b2c0cc0a", 1883834),
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
                        1486957,
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
                        780023,
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
                            size,
                        )
                    },
                ),
            ),
            label_key="Y",
            n_classes=13,
            paper=False,
        )
        for i, sha, size in (
            (1, "95f0502d9b12482f7e8a37191a06a2df1c8bf2822efeca9ae032545605059d8c", 2493972),
            (2, "858717b1144ed01203d8d03f6966d4df5e3726f09e0aacd359c148d6970acb2b", 3774636),
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
                        size=3664424,
                        build=Build(
                            "simlr_rdata",
                            {"data": _sized("scrna/SIMLR/Test_3_Pollen.RData", f"{SIMLR}/Test_3_Pollen.RData",
                                            "a32594bd8c5db54485fb56c3fd0e25e2f35e97593867d74859f33d4178b1f693", 3918781)},
                            {"provenance": "BatzoglouLabSU/SIMLR data/Test_3_Pollen.RData (in_X transposed; true_labs); "
                                           "values are the SIMLR-preprocessed (log-scale) expression, not counts; "
                                           "gene names not provided"},
                        ),
                    )
                },
                note="converted from SIMLR Test_3_Pollen.RData",
            ),
        ),
        label_key="cell_type1",
        n_classes=11,
        paper=False,
        hint=f"{SIMLR}/Test_3_Pollen.RData (converted to derived/Pollen_SIMLR.h5ad on download)",
    ),
]

REGISTRY: dict[str, DatasetSpec] = {spec.name: spec for spec in _SPECS}

# Public files that belong to no dataset's source: the authors' published prediction for DLPFC 151507 and the labels
# it is scored against (`python evaluate.py --pred ... --labels ... --label-key layer_guess`).
REFERENCE_FILES: tuple[DataFile, ...] = (
    _sized("reference_outputs/scRCL/ST/pred_label_dict_151507.mat", f"{SCRCL_RESULTS}/ST/pred_label_dict_151507.mat",
           "169555373e5386e4d5aca8dbf7492808042f21691a182fb3038b553f11f677c2", 17088),
    _sedr_metadata("151507"),
)


def _with_inputs(file: DataFile):
    yield file
    if file.build is not None:
        for original in file.build.inputs.values():
            yield from _with_inputs(original)


def known_files() -> dict[str, DataFile]:
    """Every file the registry can place under the data directory, by path: the sources' files, the originals
    of derived files and the reference files."""
    files = [f for spec in _SPECS for s in spec.sources for f in s.files.values()] + list(REFERENCE_FILES)
    return {each.path: each for f in files for each in _with_inputs(f)}


def get_file(path: str) -> DataFile:
    """A registry file by its path under the data directory."""
    known = known_files()
    if path not in known:
        close = difflib.get_close_matches(path, known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise UserError(f"no registry file has the path '{path}'{hint}")
    return known[path]


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
