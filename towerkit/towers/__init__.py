"""towerkit.towers."""
from towerkit.towers.comirec_dr import ComiRecDR  # noqa: E402,F401
from towerkit.towers.comirec_sa import ComiRecSA  # noqa: E402,F401
from towerkit.towers.mind import MIND  # noqa: E402,F401
from towerkit.towers.gru import GRUTower  # noqa: E402,F401
from towerkit.towers.youtube_dnn import YouTubeDNN  # noqa: E402,F401
