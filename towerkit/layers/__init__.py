"""towerkit.layers: layers shared by several towers (capsule routing, attention readouts)."""

from towerkit.layers.capsule_routing import CapsuleRouting, interest_count, squash
from towerkit.layers.label_aware_attention import LabelAwareAttention
from towerkit.layers.multi_interest_tower import MultiInterestTower
from towerkit.layers.profile_embedding import ProfileEmbedding
from towerkit.layers.self_attentive_readout import SelfAttentiveReadout

__all__ = [
    "CapsuleRouting",
    "LabelAwareAttention",
    "MultiInterestTower",
    "ProfileEmbedding",
    "SelfAttentiveReadout",
    "interest_count",
    "squash",
]
