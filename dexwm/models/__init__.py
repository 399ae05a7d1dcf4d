"""Model layer: frozen encoders, the DexWM predictor, the hand-consistency head, losses,
normalisers and the `WorldModel` surface (encode / predict / rollout / heatmaps)."""
