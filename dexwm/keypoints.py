"""Hand topology shared by every layer: two hands (left, right) of 21 keypoints each in the
MediaPipe / MANO order (wrist, thumb 1-4, index 1-4, middle 1-4, ring 1-4, little 1-4).

A leaf module: constants only, no imports from dexwm.
"""

NUM_HANDS = 2
NUM_KEYPOINTS = 21
LEFT, RIGHT = 0, 1
WRIST = 0
FINGERTIPS = (4, 8, 12, 16, 20)
# The 6 points per hand the hand-consistency head predicts: wrist + 5 fingertips (DexWM).
HEATMAP_POINTS = (WRIST, *FINGERTIPS)
