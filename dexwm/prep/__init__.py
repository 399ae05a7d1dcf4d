"""Offline data preparation (used by the `data_prep` commands, never by training): MediaPipe hand
detection, hand fitting into the camera frame, video inputs, human-video and DROID conversion."""
