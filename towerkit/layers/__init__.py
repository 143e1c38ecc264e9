"""towerkit.layers: layers shared by several towers and models (capsule routing, attention
readouts, experts and gates of multi-task rankers, SASRec's causal self-attention block)."""

from towerkit.layers.attention_transfer import AttentionTransfer
from towerkit.layers.capsule_routing import CapsuleRouting, interest_count, squash
from towerkit.layers.causal_self_attention_block import CausalSelfAttentionBlock
from towerkit.layers.expert_gate import ExpertGate
from towerkit.layers.experts import Experts
from towerkit.layers.extraction_layer import ExtractionLayer
from towerkit.layers.label_aware_attention import LabelAwareAttention
from towerkit.layers.multi_interest_tower import MultiInterestTower
from towerkit.layers.profile_embedding import ProfileEmbedding
from towerkit.layers.self_attentive_readout import SelfAttentiveReadout

__all__ = [
    "AttentionTransfer",
    "CapsuleRouting",
    "CausalSelfAttentionBlock",
    "ExpertGate",
    "Experts",
    "ExtractionLayer",
    "LabelAwareAttention",
    "MultiInterestTower",
    "ProfileEmbedding",
    "SelfAttentiveReadout",
    "interest_count",
    "squash",
]
