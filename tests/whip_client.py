"""FFmpeg's own WHIP muxer (inside PyAV's wheel) as an independent publisher, run in its own process.

FFmpeg blocks in C while it talks HTTP and DTLS, so it must not share a process (and a GIL) with the server.
"""

from __future__ import annotations

import time
from pathlib import Path

import av
from cryptography.hazmat.primitives import serialization

from sfuctl.rtc.dtls import DtlsCertificate


def write_p256_certificate(directory: Path) -> tuple[Path, Path]:
    """FFmpeg's default DTLS key is P-224, which OpenSSL 3 refuses: give it a P-256 one."""
    certificate = DtlsCertificate.generate()
    cert_path, key_path = directory / "whip-cert.pem", directory / "whip-key.pem"
    cert_path.write_bytes(certificate.cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        certificate.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def publish(url: str, video: str, audio: str, directory: str, seconds: float) -> None:
    """Remux H.264 + Opus files to a WHIP endpoint in real time (no encoding), then close (FFmpeg sends DELETE)."""
    cert, key = write_p256_certificate(Path(directory))
    video_in, audio_in = av.open(video), av.open(audio)
    out = av.open(url, mode="w", format="whip", options={"cert_file": str(cert), "key_file": str(key)})
    video_out = out.add_stream_from_template(video_in.streams.video[0])
    audio_out = out.add_stream_from_template(audio_in.streams.audio[0])
    packets = []
    for container, stream, target in ((video_in, video_in.streams.video[0], video_out), (audio_in, audio_in.streams.audio[0], audio_out)):
        for packet in container.demux(stream):
            if packet.dts is not None:
                packets.append((float(packet.pts * packet.time_base), packet, target))
    packets.sort(key=lambda item: item[0])
    start = time.monotonic()
    for at, packet, target in packets:
        if at > seconds:
            break
        while time.monotonic() - start < at:
            time.sleep(0.002)
        packet.stream = target
        out.mux(packet)
    out.close()
