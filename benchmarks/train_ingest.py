"""Training-ingest benchmark (a script, not a test): Ray Data ingest vs in-memory tensors.

Ray Data: ``fit`` on the materialised cutouts of a mock sky (Parquet -> split -> one Ray
Train worker, augmentation on the device), images/s of the last epoch as the loop reports it.
In memory: the same model, batch size, augmentation and optimiser step on tensors already in
memory, in a Ray task with the training worker's CPU share (so the same torch threads).
Prints both rates, their ratio and the peak memory (PSS) of the Ray session.

Usage: ``python benchmarks/train_ingest.py [N_GALAXIES]`` (default 2000: about 3 minutes).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from ray_common import PeakTreeMemory, demo_like_config, sky_workspace

EPOCHS = 2  # the first epoch warms up; the rate of the last one is reported


def in_memory_rate(cfg, n_images: int) -> float:
    """Images/s of the training step on tensors already in memory (1 CPU, like a worker)."""
    import ray

    @ray.remote(num_cpus=1)
    def run() -> float:
        import torch
        import torch.nn.functional as F

        from raycat.photoz.model import build_model
        from raycat.photoz.train import dihedral_augment

        bands, size, batch = len(cfg.cutouts.bands), cfg.cutouts.size_px, cfg.train.batch_size
        model = build_model(cfg.model, bands).train()
        optimiser = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
        x = torch.randn(n_images, bands, size, size)
        y = torch.randint(0, cfg.model.n_bins, (n_images,))

        def step(i: int) -> None:
            loss = F.cross_entropy(model(dihedral_augment(x[i : i + batch])), y[i : i + batch])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()

        step(0)  # warm up
        started = time.perf_counter()
        for i in range(0, n_images - batch + 1, batch):
            step(i)
        return (n_images // batch) * batch / (time.perf_counter() - started)

    return ray.get(run.remote())


def main(n_galaxies: int) -> None:
    from raycat.photoz.train import fit
    from raycat.pipeline import materialise_cutouts, read_materialised
    from raycat.runtime import ray_session

    with sky_workspace(n_galaxies) as root:
        cfg = demo_like_config(
            root, cutouts={"output": str(root / "cutouts")}, train={"epochs": EPOCHS}
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
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
