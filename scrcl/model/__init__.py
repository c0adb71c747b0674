"""The network and its objective (paper §3, Eq. 1-10) as plain ``nn.Module``s, usable without Lightning.

``ScRCL`` (encoders.py, refinement.py, network.py) maps a batch to the view embeddings, the gene embeddings and the
refined representations; ``Objective`` (objective.py, losses.py) turns those into the loss of Eq. 10.
"""

from scrcl.model.network import ScRCL
from scrcl.model.objective import Objective

__all__ = ["ScRCL", "Objective"]
