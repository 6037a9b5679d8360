"""Cost of the test-time horizontal flip: model time per clip with and without ``tta_flip``.

Times :func:`dfdetect.inference.predictor.forward_logits` (what ``Predictor.predict`` runs)
on the demo's model shape (EfficientNet-Lite0, frame-level, 8 frames of 128 px) on the CPU,
and prints the ratio. Decoding and face detection are not included: they do not change.

    python bench/tta_cost.py [--clips 8] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time

import torch

from dfdetect.config import ModelConfig
from dfdetect.inference.predictor import forward_logits
from dfdetect.models.detector import build_model


def _time(model: torch.nn.Module, clips: torch.Tensor, flip: bool, repeats: int) -> float:
    forward_logits(model, clips[:1], torch.device("cpu"), flip)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        forward_logits(model, clips, torch.device("cpu"), flip)
    return (time.perf_counter() - start) / repeats / len(clips)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="efficientnet_lite0", pretrained="none",
                                    temporal="none")).eval()
    clips = torch.randn(a.clips, a.frames, 3, a.size, a.size)
    plain = _time(model, clips, False, a.repeats)
    flip = _time(model, clips, True, a.repeats)
    with torch.inference_mode():
        same = forward_logits(model, clips, torch.device("cpu"), True)[0]
        mirrored = forward_logits(model, clips.flip(-1), torch.device("cpu"), True)[0]
    print(f"threads {torch.get_num_threads()}, {a.clips} clips of {a.frames} x {a.size} px")
    print(f"model time per clip: plain {plain * 1000:.1f} ms, with flip {flip * 1000:.1f} ms, "
          f"ratio {flip / plain:.2f}x")
    print(f"flip-averaged scores are mirror-invariant: max |diff| "
          f"{(same - mirrored).abs().max().item():.2e}")


if __name__ == "__main__":
    main()
