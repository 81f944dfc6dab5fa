"""Stand-in for a researcher's own data and training: a 32x32 ImageFolder and a trained checkpoint.

Writes ``<out>/train/<class>/*.png`` and ``<out>/eval/<class>/*.png`` (the embedded benchmark's shapes
drawn at 32x32, ten classes; ``--size 28`` resizes them) and ``<out>/tiny_cnn.pt`` (a plain state dict of
:class:`tiny_cnn.TinyCNN` trained on them with a plain PyTorch loop). ``--channels 1`` writes grey
images and a one-channel model, as for MNIST-like data.

Usage: ``python examples/byo_model/prepare.py --out /tmp/byo [--channels 1 --size 28] [--epochs 12]``
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from tiny_cnn import make_model

from salbench.data.embedded import BenchmarkSpec, generate_benchmark


def image_folder(bench: Path, split: str, out: Path, channels: int, size: int) -> None:
    """``<bench>/<split>.csv`` rows -> ``<out>/<split>/<class name>/<id>.png``."""
    names = (bench / "classes.txt").read_text().split()
    for line in (bench / f"{split}.csv").read_text().splitlines():
        rel, label = line.rsplit(",", 1)
        target = out / split / names[int(label)] / Path(rel).name
        target.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(bench / rel) as img:
            img = img.convert("L") if channels == 1 else img.convert("RGB")
            (img if img.size == (size, size) else img.resize((size, size), Image.Resampling.BILINEAR)).save(
                target
            )


def load(folder: Path, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """An ImageFolder tree as tensors normalised with mean 0.5 and std 0.25 per channel."""
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    xs, ys = [], []
    for label, name in enumerate(classes):
        for path in sorted((folder / name).glob("*.png")):
            with Image.open(path) as img:
                arr = np.asarray(img.convert("L" if channels == 1 else "RGB"), dtype=np.float32) / 255.0
            xs.append(arr[None] if channels == 1 else arr.transpose(2, 0, 1))
            ys.append(label)
    x = (torch.from_numpy(np.stack(xs)) - 0.5) / 0.25
    return x, torch.tensor(ys)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--channels", type=int, choices=[1, 3], default=3)
    p.add_argument("--size", type=int, default=32, help="image side (28: MNIST-like)")
    p.add_argument("--epochs", type=int, default=12)
    args = p.parse_args()
    bench = args.out / "_benchmark"
    spec = BenchmarkSpec(image_size=32, n_train=2000, n_val=10, n_eval=200)
    generate_benchmark(bench, seed=0, spec=spec, progress=True)
    for split in ("train", "eval"):
        shutil.rmtree(args.out / split, ignore_errors=True)
        image_folder(bench, split, args.out, args.channels, args.size)
    torch.manual_seed(0)
    x, y = load(args.out / "train", args.channels)
    model = make_model(num_classes=10, channels=args.channels)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    steps = args.epochs * ((len(x) + 63) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            idx = perm[i : i + 64]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        xe, ye = load(args.out / "eval", args.channels)
        with torch.no_grad():
            acc = float((model(xe).argmax(1) == ye).float().mean())
        print(f"epoch {epoch + 1}/{args.epochs}: loss {loss.item():.3f}, eval accuracy {acc:.3f}")
    torch.save(model.state_dict(), args.out / "tiny_cnn.pt")
    print(f"wrote {args.out / 'train'}, {args.out / 'eval'} and {args.out / 'tiny_cnn.pt'}")


if __name__ == "__main__":
    main()
