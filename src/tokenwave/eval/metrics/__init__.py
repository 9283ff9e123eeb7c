"""Codec metrics: each a plain function of two signals (reference, estimate) or one, documented with its
exact definition and source. Submodules: ``signal`` (STFT and mel distances, SI-SDR), ``perceptual``
(PESQ, STOI, V/UV F1), ``models`` (WER, speaker similarity, DNSMOS), ``codec_stats`` (bitrate, token
rate, codebook utilisation and entropy)."""
