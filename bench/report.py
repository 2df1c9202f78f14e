"""Machine description and the printed table of a benchmark run."""

from __future__ import annotations

import os
import platform


def machine(device: str) -> dict:
    import torch
    import transformers

    info = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": device,
        "device_kind": "cpu",
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        index = int(device.split(":")[1]) if ":" in device else 0
        info["gpu"] = torch.cuda.get_device_name(index)
        info["device_kind"] = info["gpu"].replace(" ", "_")
    return info


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def print_table(results: dict) -> None:
    m = results["machine"]
    print(f"\nmachine: {m['cpu']} ({m['cores']} cores), torch {m['torch']}, device {m['device']}"
          + (f" ({m['gpu']})" if "gpu" in m else ""))
    print(f"{'':4} {'measurement':58} {'median s':>9} {'frames/s':>9}  notes")
    for row in results["rows"]:
        notes = []
        if "first_audio_s" in row:
            notes.append(f"first audio {row['first_audio_s']:.3f}s")
        if "audio_s_per_s" in row:
            notes.append(f"{row['audio_s_per_s']:.2f} audio s/s")
        if "ops_per_step" in row:
            notes.append(f"{row['ops_per_step']} aten ops/step, {row['syncing_ops_per_step']} syncing")
        if "ms_per_step" in row:
            notes.append(f"{row['ms_per_step']:.2f} ms/step")
        fps = f"{row['frames_per_s']:.1f}" if row.get("frames_per_s") else "-"
        print(f"{row['id'][:4]:4} {row['name'][:58]:58} {row['median_s']:9.3f} {fps:>9}  {', '.join(notes)}")
    print("\nratios:")
    for name, value in results["ratios"].items():
        print(f"  {name}: {'-' if value is None else f'{value:.3f}'}")
