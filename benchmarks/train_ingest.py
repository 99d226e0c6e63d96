"""Training-ingest benchmark (a script, not a test): Ray Data ingest vs in-memory tensors.

Ray Data: ``fit`` on the materialised cutouts of a mock sky (Parquet -> split -> one Ray
Train worker, augmentation on the device), images/s of the last epoch as the loop reports it.
In memory: the same model, batch size, augmentation and optimiser step on tensors already in
memory, in a Ray task with the training worker's CPU share (so the same torch threads).
Prints both rates, their ratio and the peak memory (PSS) of the Ray session.

Usage: ``python benchmarks/train_ingest.py [N_GALAXIES] [--gpu]`` (default 2000: about 3
minutes). ``--gpu``: the training worker and the in-memory step on one GPU (``train.use_gpu``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from ray_common import PeakTreeMemory, demo_like_config, gpu_sections, sky_workspace

EPOCHS = 2  # the first epoch warms up; the rate of the last one is reported


def in_memory_rate(cfg, n_images: int) -> float:
    """Images/s of the training step on tensors already in memory (1 CPU, like a worker;
    or one GPU, in bf16 autocast like the loop)."""
    import ray

    gpu = cfg.train.use_gpu

    @ray.remote(num_cpus=1, num_gpus=1 if gpu else 0)
    def run() -> float:
        import torch
        import torch.nn.functional as F

        from raycat.photoz.model import build_model
        from raycat.photoz.train import dihedral_augment

        bands, size, batch = len(cfg.cutouts.bands), cfg.cutouts.size_px, cfg.train.batch_size
        device = torch.device("cuda" if gpu else "cpu")
        model = build_model(cfg.model, bands).to(device).train()
        optimiser = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
        x = torch.randn(n_images, bands, size, size, device=device)
        y = torch.randint(0, cfg.model.n_bins, (n_images,), device=device)

        def step(i: int) -> None:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=gpu):
                logits = model(dihedral_augment(x[i : i + batch])).float()
            loss = F.cross_entropy(logits, y[i : i + batch])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()

        step(0)  # warm up
        started = time.perf_counter()
        for i in range(0, n_images - batch + 1, batch):
            step(i)
        if gpu:
            torch.cuda.synchronize()
        return (n_images // batch) * batch / (time.perf_counter() - started)

    return ray.get(run.remote())


def main(n_galaxies: int, gpu: bool = False) -> None:
    from raycat.photoz.train import fit
    from raycat.pipeline import materialise_cutouts, read_materialised
    from raycat.runtime import ray_session

    with sky_workspace(n_galaxies) as root:
        cfg = demo_like_config(
            root,
            cutouts={"output": str(root / "cutouts")},
            train={"epochs": EPOCHS, "use_gpu": gpu},
            **({"ray": gpu_sections()["ray"]} if gpu else {}),
        )
        with ray_session(cfg.ray):
            materialise_cutouts(cfg)
            with PeakTreeMemory() as memory:
                metrics = fit(cfg, read_materialised(cfg)[1]())
            memory_only = in_memory_rate(cfg, metrics["train_objects"])
    ingest = metrics["images_per_s"]
    print(
        f"Ray Data ingest (Parquet cutouts -> Ray Train): {ingest:7.1f} images/s "
        f"(epoch {EPOCHS}, {metrics['train_objects']} training images)"
    )
    print(
        f"  of which waiting for the epoch's first batch (pipeline start-up): "
        f"{metrics['first_batch_s']:.2f} s of about {metrics['train_objects'] / ingest:.1f} s"
    )
    print(f"in-memory tensors (same step, 1 CPU):           {memory_only:7.1f} images/s")
    print(f"ratio ingest / in-memory: {ingest / memory_only:.2f} (target >= 0.9)")
    print(f"peak memory (PSS) of the Ray session during training: {memory.mib:.0f} MiB")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--gpu"]
    main(int(args[0]) if args else 2000, gpu="--gpu" in sys.argv)
