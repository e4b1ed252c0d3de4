"""speechbrain-dsn: dynamic slimmable networks for efficient speech separation.

Reference implementation of Elminshawi, Chetupalli and Habets, *Dynamic
Slimmable Networks for Efficient Speech Separation* (IEEE/ACM TASLP 2025) as a
SpeechBrain plugin.
"""

from .gating import GatingModule
from .layers import SlimmableTransformerBlock
from .masker import DSNMasker
from .model import DSNSepformer

__all__ = ["DSNMasker", "DSNSepformer", "GatingModule", "SlimmableTransformerBlock"]
__version__ = "0.1.0"
