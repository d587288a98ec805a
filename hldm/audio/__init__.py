"""Audio: WAV/FLAC I/O and resampling (`io`), STFT features and their inversion (`features`)."""
