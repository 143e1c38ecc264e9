"""towerkit.features: Keras layers turning raw features into dense vectors."""

from towerkit.features.attribute_embedding import AttributeEmbedding
from towerkit.features.feature_set import INDEX_SUFFIX, FeatureSet
from towerkit.features.id_embedding import IdEmbedding
from towerkit.features.numeric import NormalizedNumeric
from towerkit.features.text_embedding import TextEmbedding
from towerkit.features.timestamp import TimestampEmbedding

__all__ = ["AttributeEmbedding", "FeatureSet", "INDEX_SUFFIX", "IdEmbedding", "NormalizedNumeric", "TextEmbedding",
           "TimestampEmbedding"]
