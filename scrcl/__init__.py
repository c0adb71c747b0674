"""scRCL: cell–gene refinement contrastive learning for cell types and spatial domains.

For scanpy users::

    import scrcl
    scrcl.fit(adata, n_clusters=8)        # fills adata.obsm['X_scrcl'] and adata.obs['scrcl_cluster']
"""

from scrcl.errors import UserError

__all__ = ["UserError", "fit"]


def fit(adata, n_clusters=None, **config):
    """Train scRCL on an AnnData and cluster it; see :func:`scrcl.api.fit`."""
    from scrcl.api import fit as _fit  # imported lazily: torch/lightning are heavy

    return _fit(adata, n_clusters=n_clusters, **config)
